-- One script holds every operation (so Redis caches one SHA and the .wasm carries the
-- shared helpers once). ARGV[1] names the operation; the rest are its arguments.
local operations = {
  create = create, get = get, patch = patch, rotate = rotate,
  logout = logout, list = list, revoke_all = revoke_all,
  server_patch = server_patch, revoke_user = revoke_user,
}
local operation = operations[table.remove(ARGV, 1)]
if not operation then
  return redis.error_reply('ERR unknown session operation')
end
return operation()

// Scores a run of the HTTP caching test suite the way cache-tests.fyi does (a test passes
// only when its result is `true` and every test it depends on passes) and prints them beside
// the published results of the reverse proxies and CDNs for the same test ids, then the
// required tests that failed, and this project's scores by group of tests.
//   node scores.mjs SUITE_DIR RESULTS_JSON PUBLISHED_RESULTS_DIR
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, ourFile, publishedDir] = process.argv.slice(2)
const load = async (p) => (await import(pathToFileURL(p).href)).default
const suites = [...(await load(path.join(suiteDir, 'tests/index.mjs')))]
const surrogate = path.join(suiteDir, 'tests/surrogate-control.mjs')
if (fs.existsSync(surrogate)) {
  const s = await load(surrogate)
  if (!suites.includes(s)) suites.push(s)
}
const tests = new Map()
for (const suite of suites) for (const t of suite.tests) if (!t.browser_only) tests.set(t.id, t)

function passes (results, id, seen = new Set()) {
  const t = tests.get(id)
  if (!t || seen.has(id)) return false
  seen.add(id)
  for (const dep of t.depends_on || []) if (!passes(results, dep, seen)) return false
  return results[id] === true
}

function score (results) {
  const s = { required: 0, optimal: 0, check: 0 }
  for (const [id, t] of tests) if (passes(results, id)) s[t.kind || 'required']++
  return s
}

const totals = { required: 0, optimal: 0, check: 0 }
for (const t of tests.values()) totals[t.kind || 'required']++
const ours = JSON.parse(fs.readFileSync(ourFile, 'utf8'))
const rows = [['this project (standards mode)', score(ours)]]
const indexFile = path.join(publishedDir, 'index.mjs')
if (fs.existsSync(indexFile)) {
  for (const item of await load(indexFile)) {
    if (item.type === 'browser') continue
    const results = JSON.parse(fs.readFileSync(path.join(publishedDir, item.file), 'utf8'))
    rows.push([`${item.name} ${item.version}`, score(results)])
  }
}
console.log(`| cache | required (of ${totals.required}) | optional (of ${totals.optimal}) | checks (of ${totals.check}) |`)
console.log('|---|---|---|---|')
for (const [name, s] of rows) console.log(`| ${name} | ${s.required} | ${s.optimal} | ${s.check} |`)
console.log('\nThis project by group (passed / total):\n')
console.log('| group | required | optional | checks |')
console.log('|---|---|---|---|')
for (const suite of suites) {
  const row = { required: [0, 0], optimal: [0, 0], check: [0, 0] }
  for (const t of suite.tests) {
    if (t.browser_only) continue
    const cell = row[t.kind || 'required']
    cell[1]++
    if (passes(ours, t.id)) cell[0]++
  }
  const fmt = ([p, n]) => (n ? `${p} / ${n}` : '')
  console.log(`| ${suite.id} | ${fmt(row.required)} | ${fmt(row.optimal)} | ${fmt(row.check)} |`)
}
console.log('\nRequired tests failed:')
for (const [id, t] of tests) {
  if ((t.kind || 'required') !== 'required' || passes(ours, id)) continue
  const r = ours[id]
  const why = r === undefined ? 'not run' : r === true ? 'a dependency failed' : JSON.stringify(r).slice(0, 160)
  console.log(`- ${id}: ${why}`)
}

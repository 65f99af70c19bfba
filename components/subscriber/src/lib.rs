//! Spin component `subscriber`: Spin's Redis trigger calls it with each message published on
//! its channel (`spin-subscriber.toml`); the work is in `spin_redis_patterns::subscriber`.

use spin_sdk::redis_component;

#[redis_component]
fn on_message(message: Vec<u8>) -> Result<(), String> {
    spin_redis_patterns::subscriber::handle_message(&message)
}

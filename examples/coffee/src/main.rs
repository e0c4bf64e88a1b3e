//! `coffee`: the `infersim` command with infersim's worlds and the café.

use infersim::registry::Registry;
use infersim_example_coffee::CoffeeWorld;

fn main() -> std::process::ExitCode {
    infersim::cli::main(Registry::builtin().with::<CoffeeWorld>().with_default_scenario("cafe"))
}

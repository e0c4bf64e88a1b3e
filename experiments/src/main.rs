//! The `infersim` command: the library's command line with infersim's own worlds.

fn main() -> std::process::ExitCode {
    infersim::cli::main(infersim::registry::Registry::builtin())
}

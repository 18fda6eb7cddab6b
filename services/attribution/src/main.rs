//! `accrue-attribution`: runs the attribution service and its saga workers
//! (flags: `--help`).

fn main() -> std::process::ExitCode {
    accrue_kit::service::main::<accrue_attribution::Attribution>()
}

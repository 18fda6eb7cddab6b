//! `accrue-commission`: runs the commission service (flags: `--help`).

fn main() -> std::process::ExitCode {
    accrue_kit::service::main::<accrue_commission::Commission>()
}

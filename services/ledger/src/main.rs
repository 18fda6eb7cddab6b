//! `accrue-ledger`: runs the ledger service (flags: `--help`).

fn main() -> std::process::ExitCode {
    accrue_kit::service::main::<accrue_ledger::Ledger>()
}

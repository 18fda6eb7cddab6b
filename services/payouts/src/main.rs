//! `accrue-payouts`: runs the payouts service (flags: `--help`).

fn main() -> std::process::ExitCode {
    accrue_kit::service::main::<accrue_payouts::Payouts>()
}

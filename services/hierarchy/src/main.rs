//! `accrue-hierarchy`: runs the hierarchy service (flags: `--help`).

fn main() -> std::process::ExitCode {
    accrue_kit::service::main::<accrue_hierarchy::Hierarchy>()
}

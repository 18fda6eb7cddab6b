//! `accrue-attribution`: runs the attribution service and its saga workers
//! (flags: `--help`).

/// mimalloc rather than glibc's malloc: settling a batch allocates and frees
/// many small strings and maps (protobuf, JSON breakdowns), and a profile of
/// the replay put glibc's malloc/free/consolidate at about a third of the
/// services' CPU (issue 15).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    accrue_kit::service::main::<accrue_attribution::Attribution>()
}

//! Program settings' defaults (DESIGN §4; the hierarchy service owns the
//! program, the commission calculation applies its settings).

/// Highest override level a program pays when its `override_depth_cap` is left
/// 0 (unset in proto3). Levels, not tree depth: 1 = the seller's parent.
pub const DEFAULT_OVERRIDE_DEPTH_CAP: u32 = 8;

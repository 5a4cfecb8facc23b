//! The macro behind the pipeline's per-reason counters.

/// Defines a dense `Copy` enum from one list, each variant with its counter
/// name and its doc, so `ALL`, `COUNT`, `index` and `name` follow the enum by
/// construction (VPP's `foreach_*_error`): `$name;` then
/// `Variant => "name", "Doc.";` a line.
macro_rules! dense_enum {
    ($(#[$meta:meta])* $name:ident; $($variant:ident => $label:literal, $doc:literal;)*) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum $name { $(#[doc = $doc] $variant,)* }

        impl $name {
            /// Every variant, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// Number of variants, for sizing counter arrays.
            pub const COUNT: usize = Self::ALL.len();

            /// Dense index `0..COUNT`.
            pub const fn index(self) -> usize {
                self as usize
            }

            /// Counter name.
            pub const fn name(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }
        }
    };
}

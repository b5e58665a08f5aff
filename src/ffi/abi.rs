// The OpenSIPS releases whose ABI src/ffi/sys.rs declares, as
// (major, minor): the layout asserts in layout.rs are written for these.
// build.rs includes this file too and refuses to build for any other
// release, since a module built against the wrong layout would load and
// then misread OpenSIPS's structures.
pub const SUPPORTED_ABIS: &[(u32, u32)] = &[(3, 4), (3, 6), (4, 0)];

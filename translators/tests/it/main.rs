//! Tests of the public API of `vcsync-translators`, in one binary to keep linking cheap.

mod indices;
mod labels;
mod names;
mod references;
mod translator;

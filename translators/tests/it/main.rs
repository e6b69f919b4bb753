//! Tests of the public API of `vcsync-translators`, in one binary to keep linking cheap.

mod indices;
mod labels;
mod names;
mod per_namespace;
mod references;
mod translator;

//! Helpers shared by the sled tests (`mod common;` in each).

use std::path::Path;

/// Copies the directory `from` into `to`, recursively: a crash image of a store when taken
/// while the store is still open (no shutdown snapshot).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

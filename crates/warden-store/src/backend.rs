//! Backend pools (filled in by the store implementation).
#[derive(Clone)]
pub(crate) enum Db {}

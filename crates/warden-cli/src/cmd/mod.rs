//! One module per subcommand.

pub mod admin;
pub mod audit;
pub mod connect;
pub mod exec;
pub mod gateway;
pub mod login;
pub mod notify;
pub mod request;
pub mod review;
pub mod wait;

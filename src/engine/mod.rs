//! The engines that read sources and write them back.

pub mod mysql;
pub mod pipe;
pub mod postgres;
pub mod probe;
pub mod redis;
pub mod volume;

//! The engines that read sources and write them back: Redis so far.

pub mod redis;

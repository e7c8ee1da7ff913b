//! Tests of the metrics module against independent references: hand-worked cases,
//! a direct O(m·n) DeLong, published tables (Hanley & McNeil 1982, the paper's
//! Tables 2 and 3, pROC's aSAH results) and properties.

mod asah;
mod brute;
mod hand;
mod paper;
mod props;

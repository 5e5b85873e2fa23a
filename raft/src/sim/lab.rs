//! The 6.5840 tester's helpers on a [`super::Sim`] (check_one_leader, one, n_committed, ...).

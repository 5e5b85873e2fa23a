//! [`TestSm`]: the simulator's state machine.

use crate::types::Index;
use bytes::Bytes;
use std::collections::BTreeMap;

/// The simulator's test state machine: it records every command applied, by index, and its
/// snapshot holds all of them (as the 6.5840 tester's does), so nodes can be compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestSm {
    pub last_applied: Index,
    pub commands: BTreeMap<Index, Bytes>,
}

impl TestSm {
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(16 + self.commands.len() * 20);
        out.extend_from_slice(&self.last_applied.to_le_bytes());
        for (index, cmd) in &self.commands {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
            out.extend_from_slice(cmd);
        }
        Bytes::from(out)
    }

    pub fn decode(data: &[u8]) -> Result<Self, String> {
        let take = |data: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
            if data.len() < n {
                return Err("truncated test snapshot".into());
            }
            let (head, tail) = data.split_at(n);
            *data = tail;
            Ok(head.to_vec())
        };
        let mut rest = data;
        let u64_of = |b: Vec<u8>| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let last_applied = u64_of(take(&mut rest, 8)?);
        let mut commands = BTreeMap::new();
        while !rest.is_empty() {
            let index = u64_of(take(&mut rest, 8)?);
            let len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().unwrap_or([0; 4]));
            commands.insert(index, Bytes::from(take(&mut rest, len as usize)?));
        }
        Ok(Self {
            last_applied,
            commands,
        })
    }
}

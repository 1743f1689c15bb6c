//! RFC 2782 ("A DNS RR for specifying the location of services"), Usage rules: try the
//! records of the lowest priority first; among records of one priority, pick each next one at
//! random with a probability proportional to its weight:
//!
//! > arrange all SRV RRs (that have not been ordered yet) in any order, except that all those
//! > with weight 0 are placed at the beginning of the list. Compute the sum of the weights of
//! > those RRs, and with each RR associate the running sum in the selected order. Then choose
//! > a uniform random number between 0 and the sum computed (inclusive), and select the RR
//! > whose running sum value is the first in the selected order which is greater than or
//! > equal to the random number selected.
//!
//! A target of "." ("the service is decidedly not available at this domain") is dropped by
//! the caller before ordering.

use rand::Rng;
use rsip_dns::records::SrvEntry;

/// The order in which to try `entries`, drawn with `rng` (a seeded one gives a repeatable
/// order).
pub fn order<R: Rng + ?Sized>(mut entries: Vec<SrvEntry>, rng: &mut R) -> Vec<SrvEntry> {
    // Stable: records of one priority keep the order they came in, zero weights first.
    entries.sort_by_key(|e| (e.priority, e.weight != 0));
    let mut ordered = Vec::with_capacity(entries.len());
    let mut rest = entries.into_iter().peekable();
    while let Some(first) = rest.next() {
        let priority = first.priority;
        let mut group = vec![first];
        while let Some(e) = rest.next_if(|e| e.priority == priority) {
            group.push(e);
        }
        while !group.is_empty() {
            let sum: u32 = group.iter().map(|e| u32::from(e.weight)).sum();
            let pick = rng.gen_range(0..=sum);
            let mut running = 0u32;
            let at = group
                .iter()
                .position(|e| {
                    running += u32::from(e.weight);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(group.remove(at));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn srv(priority: u16, weight: u16, target: &str) -> SrvEntry {
        SrvEntry {
            priority,
            weight,
            port: 5060.into(),
            target: target.to_owned().into(),
        }
    }

    fn targets(v: &[SrvEntry]) -> Vec<String> {
        v.iter().map(|e| e.target.to_string()).collect()
    }

    #[test]
    fn lower_priority_always_first_whatever_the_weights() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let o = order(
                vec![srv(20, 1000, "c"), srv(10, 0, "a"), srv(10, 5, "b")],
                &mut rng,
            );
            assert_eq!(o.len(), 3);
            assert_eq!(o[2].target.to_string(), "c", "{:?}", targets(&o));
            assert!(o[..2].iter().all(|e| e.priority == 10));
        }
    }

    /// Weights 90 and 10: the heavy record comes first with probability 91/101 (the pick is
    /// uniform over 0..=100 and the heavy one covers 0..=90). Seeded, so the counts are the
    /// same on every run; the bounds are what any fair draw of 4000 lands in.
    #[test]
    fn weights_share_the_first_place_in_proportion() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 4000;
        let heavy_first = (0..n)
            .filter(|_| {
                let o = order(vec![srv(1, 10, "light"), srv(1, 90, "heavy")], &mut rng);
                o[0].target.to_string() == "heavy"
            })
            .count();
        let share = heavy_first as f64 / n as f64;
        assert!((0.87..0.93).contains(&share), "heavy first {share}");
    }

    /// A zero weight is chosen only when the pick is 0 (probability 1/(sum+1)), and two zero
    /// weights keep their order.
    #[test]
    fn zero_weights() {
        let mut rng = StdRng::seed_from_u64(3);
        let n = 2200;
        let zero_first = (0..n)
            .filter(|_| order(vec![srv(1, 10, "ten"), srv(1, 0, "zero")], &mut rng)[0].weight == 0)
            .count();
        let share = zero_first as f64 / n as f64;
        assert!((0.05..0.14).contains(&share), "zero first {share}");
        let o = order(vec![srv(1, 0, "x"), srv(1, 0, "y")], &mut rng);
        assert_eq!(targets(&o), ["x", "y"]);
    }

    #[test]
    fn same_seed_same_order() {
        let entries: Vec<SrvEntry> = (0..6).map(|i| srv(1, 10 + i, &format!("t{i}"))).collect();
        let a = order(entries.clone(), &mut StdRng::seed_from_u64(42));
        let b = order(entries, &mut StdRng::seed_from_u64(42));
        assert_eq!(targets(&a), targets(&b));
    }
}

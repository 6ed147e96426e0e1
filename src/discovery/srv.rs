//! RFC 2782 ordering of SRV targets: ascending priority; within a priority, a weighted random
//! order (an entry's chance of coming next is proportional to its weight; weight 0 entries come
//! last in expectation but can still be picked).

use super::SrvTarget;

/// Order SRV targets per RFC 2782. `random` supplies uniformly distributed numbers (injected so
/// tests are deterministic).
pub fn rfc2782_order(
    mut targets: Vec<SrvTarget>,
    random: &mut dyn FnMut() -> u32,
) -> Vec<SrvTarget> {
    // "." as the only target means the service is decidedly not available.
    targets.retain(|t| !(t.target.is_empty() || t.target == "."));
    targets.sort_by_key(|t| t.priority);
    let mut out = Vec::with_capacity(targets.len());
    let mut rest = targets.as_slice();
    while let Some(first) = rest.first() {
        let end = rest
            .iter()
            .position(|t| t.priority != first.priority)
            .unwrap_or(rest.len());
        let (group, tail) = rest.split_at(end);
        // RFC 2782: zero-weight entries first in the list, then pick by running sum.
        let mut pool: Vec<SrvTarget> = group.iter().filter(|t| t.weight == 0).cloned().collect();
        pool.extend(group.iter().filter(|t| t.weight != 0).cloned());
        while !pool.is_empty() {
            let total: u64 = pool.iter().map(|t| u64::from(t.weight)).sum();
            let pick = if total == 0 {
                0
            } else {
                u64::from(random()) % (total + 1)
            };
            let mut running = 0u64;
            let idx = pool
                .iter()
                .position(|t| {
                    running += u64::from(t.weight);
                    running >= pick
                })
                .unwrap_or(0);
            out.push(pool.remove(idx));
        }
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, priority: u16, weight: u16) -> SrvTarget {
        SrvTarget {
            priority,
            weight,
            port: 389,
            target: name.into(),
        }
    }

    #[test]
    fn priority_first() {
        let mut r = || 7;
        let o = rfc2782_order(vec![t("b", 20, 5), t("a", 10, 5), t("c", 30, 0)], &mut r);
        let names: Vec<_> = o.iter().map(|x| x.target.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn weight_decides_within_a_priority() {
        // Over many draws the weight-90 target comes first about 90 times in 101.
        let mut seed = 1u32;
        let mut rng = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut heavy_first = 0;
        for _ in 0..10_000 {
            let o = rfc2782_order(vec![t("light", 10, 10), t("heavy", 10, 90)], &mut rng);
            if o[0].target == "heavy" {
                heavy_first += 1;
            }
            assert_eq!(o.len(), 2);
        }
        assert!((8_500..9_400).contains(&heavy_first), "{heavy_first}");
    }

    #[test]
    fn zero_weight_is_rarely_first_and_dot_means_none() {
        let mut zero = || 0;
        let o = rfc2782_order(vec![t("w100", 1, 100), t("w0", 1, 0)], &mut zero);
        assert_eq!(
            o[0].target, "w0",
            "random 0 selects the zero-weight entry, as RFC 2782 allows"
        );
        let mut big = || 100;
        let o = rfc2782_order(vec![t("w100", 1, 100), t("w0", 1, 0)], &mut big);
        assert_eq!(o[0].target, "w100");
        assert!(rfc2782_order(vec![t(".", 0, 0)], &mut big).is_empty());
    }
}

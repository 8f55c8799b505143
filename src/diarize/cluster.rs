//! Clustering of speaker embeddings: agglomerative clustering with average
//! linkage on cosine distance (1 - cos), cut at a distance threshold, or at
//! exactly `num_speakers` clusters when given, or clamped into
//! `[min_speakers, max_speakers]`. (pyannote 3.1 uses centroid linkage; with
//! short-piece embeddings average linkage gave steadier cuts here, and its
//! threshold keeps one meaning: the mean cosine distance between clusters.) Clusters smaller than
//! `min_cluster_size` are treated as outliers and joined to the nearest
//! large cluster.

use kodama::{linkage, Method};

/// How many clusters to form.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpeakerBounds {
    pub num_speakers: Option<usize>,
    pub min_speakers: Option<usize>,
    pub max_speakers: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Mean cosine distance (1 - cos) between two clusters above which they
    /// are not merged.
    pub threshold: f64,
    pub min_cluster_size: usize,
}

pub fn l2_normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Up to this many embeddings are clustered in one go (the condensed
/// distance matrix: n²/2 doubles, 64 MB at 4000, about 45 minutes of speech);
/// more are clustered in two levels.
pub const DIRECT_LIMIT: usize = 4000;

/// Cluster labels 0..k for each embedding (rows of equal length).
///
/// Above [`DIRECT_LIMIT`] embeddings (multi-hour recordings) the work stays
/// near-linear: consecutive blocks of `DIRECT_LIMIT / 2` embeddings are
/// clustered alone, cut at the threshold, and the blocks' cluster centroids
/// are then clustered with the speaker bounds, each embedding taking its
/// block cluster's label. (At that level a voice heard in one block is one
/// centroid, so the outlier rule, which counts embeddings, is not applied.)
pub fn cluster(
    embeddings: &[Vec<f32>],
    opts: &ClusterOptions,
    bounds: SpeakerBounds,
) -> Vec<usize> {
    if embeddings.len() <= DIRECT_LIMIT {
        return cluster_direct(embeddings, opts, bounds);
    }
    let local = ClusterOptions {
        threshold: opts.threshold,
        min_cluster_size: 1,
    };
    let mut block_cluster = Vec::with_capacity(embeddings.len());
    let mut reps: Vec<Vec<f32>> = Vec::new();
    for block in embeddings.chunks(DIRECT_LIMIT / 2) {
        let unit: Vec<Vec<f32>> = block.iter().map(|e| normalised(e)).collect();
        let labels = cluster_direct(&unit, &local, SpeakerBounds::default());
        let k = labels.iter().max().map_or(0, |m| m + 1);
        block_cluster.extend(labels.iter().map(|l| reps.len() + l));
        reps.extend(centroids(&unit, &labels, k));
    }
    let top = cluster(&reps, &local, bounds);
    relabel_dense(&block_cluster.iter().map(|&c| top[c]).collect::<Vec<_>>())
}

fn normalised(e: &[f32]) -> Vec<f32> {
    let mut v = e.to_vec();
    l2_normalise(&mut v);
    v
}

fn cluster_direct(
    embeddings: &[Vec<f32>],
    opts: &ClusterOptions,
    bounds: SpeakerBounds,
) -> Vec<usize> {
    let n = embeddings.len();
    if n == 0 {
        return vec![];
    }
    if n == 1 {
        return vec![0];
    }
    let unit: Vec<Vec<f32>> = embeddings.iter().map(|e| normalised(e)).collect();
    let mut condensed = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n - 1 {
        for j in i + 1..n {
            let c = unit[i]
                .iter()
                .zip(&unit[j])
                .map(|(a, b)| a * b)
                .sum::<f32>() as f64;
            condensed.push((1.0 - c).max(0.0));
        }
    }
    let dend = linkage(&mut condensed, n, Method::Average);
    let steps = dend.steps();

    // number of merges to apply
    let by_threshold = steps
        .iter()
        .take_while(|s| s.dissimilarity <= opts.threshold)
        .count();
    let merges = match bounds.num_speakers {
        Some(k) => n - k.clamp(1, n),
        None => {
            let mut clusters = n - by_threshold;
            if let Some(lo) = bounds.min_speakers {
                clusters = clusters.max(lo.min(n));
            }
            if let Some(hi) = bounds.max_speakers {
                clusters = clusters.min(hi.max(1));
            }
            n - clusters
        }
    };
    let mut labels = apply_merges(n, steps, merges);

    // outliers: small clusters join the nearest large one, unless that would
    // break an explicit speaker count
    if bounds.num_speakers.is_none() && opts.min_cluster_size > 1 {
        let k = labels.iter().max().unwrap() + 1;
        let sizes: Vec<usize> = (0..k)
            .map(|c| labels.iter().filter(|&&l| l == c).count())
            .collect();
        let large: Vec<usize> = (0..k)
            .filter(|&c| sizes[c] >= opts.min_cluster_size)
            .collect();
        let min_k = bounds.min_speakers.unwrap_or(1);
        if !large.is_empty() && large.len() >= min_k && large.len() < k {
            let cents = centroids(&unit, &labels, k);
            let remap: Vec<usize> = (0..k)
                .map(|c| {
                    if sizes[c] >= opts.min_cluster_size {
                        c
                    } else {
                        *large
                            .iter()
                            .max_by(|&&a, &&b| {
                                cosine(&cents[c], &cents[a])
                                    .total_cmp(&cosine(&cents[c], &cents[b]))
                            })
                            .unwrap()
                    }
                })
                .collect();
            labels = labels.iter().map(|&l| remap[l]).collect();
        }
    }
    // a given speaker count: refine the cut with spherical k-means, which
    // splits along the main direction of difference instead of peeling off
    // a few outliers
    if let Some(k) = bounds.num_speakers {
        labels = best_kmeans(&unit, labels, k.clamp(1, n));
    }
    relabel_dense(&labels)
}

/// Spherical k-means from the AHC cut and from several seeded k-means++
/// starts; the partition with the highest Calinski-Harabasz ratio (scatter
/// between clusters over scatter within, weighted by cluster size) wins, so
/// that splitting off a few outliers loses to a balanced split along the
/// main difference (deterministic: fixed seeds).
fn best_kmeans(unit: &[Vec<f32>], ahc: Vec<usize>, k: usize) -> Vec<usize> {
    let score = |labels: &[usize]| -> f32 { calinski_harabasz(unit, labels, k) };
    let mut best = kmeans_refine(unit, ahc, k, 50);
    let mut best_score = score(&best);
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for _ in 0..16 {
        // k-means++ seeding on cosine distance
        let mut seeds = vec![rng.usize(..unit.len())];
        while seeds.len() < k {
            let d: Vec<f32> = unit
                .iter()
                .map(|v| {
                    seeds
                        .iter()
                        .map(|&s| 1.0 - cosine(v, &unit[s]))
                        .fold(f32::INFINITY, f32::min)
                        .max(0.0)
                        .powi(2)
                })
                .collect();
            let total: f32 = d.iter().sum();
            let mut u = rng.f32() * total;
            let mut pick = 0;
            for (i, &x) in d.iter().enumerate() {
                u -= x;
                if u <= 0.0 {
                    pick = i;
                    break;
                }
            }
            seeds.push(pick);
        }
        let init: Vec<usize> = unit
            .iter()
            .map(|v| {
                (0..k)
                    .max_by(|&a, &b| {
                        cosine(v, &unit[seeds[a]]).total_cmp(&cosine(v, &unit[seeds[b]]))
                    })
                    .unwrap()
            })
            .collect();
        let labels = kmeans_refine(unit, init, k, 50);
        let sc = score(&labels);
        if sc > best_score && (0..k).all(|c| labels.contains(&c)) {
            best = labels;
            best_score = sc;
        }
    }
    best
}

/// Between-cluster over within-cluster scatter (Euclidean, raw means).
fn calinski_harabasz(x: &[Vec<f32>], labels: &[usize], k: usize) -> f32 {
    let dim = x.first().map_or(0, |v| v.len());
    let n = x.len();
    if k < 2 || n <= k {
        return 0.0;
    }
    let mut mean = vec![0.0f32; dim];
    let mut means = vec![vec![0.0f32; dim]; k];
    let mut counts = vec![0usize; k];
    for (v, &l) in x.iter().zip(labels) {
        counts[l] += 1;
        for d in 0..dim {
            mean[d] += v[d];
            means[l][d] += v[d];
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f32);
    for (m, &c) in means.iter_mut().zip(&counts) {
        m.iter_mut().for_each(|v| *v /= c.max(1) as f32);
    }
    let sq = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum::<f32>();
    let between: f32 = (0..k)
        .map(|c| counts[c] as f32 * sq(&means[c], &mean))
        .sum();
    let within: f32 = x.iter().zip(labels).map(|(v, &l)| sq(v, &means[l])).sum();
    if within <= 0.0 {
        return f32::INFINITY;
    }
    (between / (k - 1) as f32) / (within / (n - k) as f32)
}

/// Spherical k-means from the given labels: assign to the nearest centroid
/// (cosine), recompute, until stable. Empty clusters keep their old centroid.
fn kmeans_refine(
    unit: &[Vec<f32>],
    mut labels: Vec<usize>,
    k: usize,
    iterations: usize,
) -> Vec<usize> {
    let mut cents = centroids(unit, &labels, k);
    for _ in 0..iterations {
        let next: Vec<usize> = unit
            .iter()
            .map(|v| {
                (0..k)
                    .max_by(|&a, &b| cosine(v, &cents[a]).total_cmp(&cosine(v, &cents[b])))
                    .unwrap()
            })
            .collect();
        if next == labels {
            break;
        }
        labels = next;
        let fresh = centroids(unit, &labels, k);
        for (c, f) in cents.iter_mut().zip(fresh) {
            if f.iter().any(|x| *x != 0.0) {
                *c = f;
            }
        }
    }
    labels
}

/// Union-find over the first `merges` dendrogram steps; labels in 0..n-merges.
fn apply_merges(n: usize, steps: &[kodama::Step<f64>], merges: usize) -> Vec<usize> {
    // kodama numbers the cluster created by step i as n + i
    let mut parent: Vec<usize> = (0..n + steps.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for (i, s) in steps.iter().take(merges).enumerate() {
        let new = n + i;
        let a = find(&mut parent, s.cluster1);
        let b = find(&mut parent, s.cluster2);
        parent[a] = new;
        parent[b] = new;
    }
    let roots: Vec<usize> = (0..n).map(|i| find(&mut parent, i)).collect();
    relabel_dense(&roots)
}

/// Maps arbitrary labels to 0..k in order of first appearance.
pub fn relabel_dense(labels: &[usize]) -> Vec<usize> {
    let mut seen: Vec<usize> = Vec::new();
    labels
        .iter()
        .map(|l| match seen.iter().position(|s| s == l) {
            Some(i) => i,
            None => {
                seen.push(*l);
                seen.len() - 1
            }
        })
        .collect()
}

/// Mean of the (unit) embeddings of each cluster.
pub fn centroids(unit: &[Vec<f32>], labels: &[usize], k: usize) -> Vec<Vec<f32>> {
    let dim = unit.first().map_or(0, |v| v.len());
    let mut c = vec![vec![0.0f32; dim]; k];
    for (v, &l) in unit.iter().zip(labels) {
        for (a, b) in c[l].iter_mut().zip(v) {
            *a += b;
        }
    }
    for v in &mut c {
        l2_normalise(v);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points around `k` well separated directions in 8-d.
    fn blobs(k: usize, per: usize) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut seed = 99u32;
        let mut noise = || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2
        };
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..per {
            for c in 0..k {
                let mut v: Vec<f32> = (0..8).map(|_| noise()).collect();
                v[c] += 1.0;
                xs.push(v);
                ys.push(c);
                let _ = i;
            }
        }
        (xs, ys)
    }

    fn opts() -> ClusterOptions {
        ClusterOptions {
            threshold: 0.5,
            min_cluster_size: 1,
        }
    }

    fn same_partition(a: &[usize], b: &[usize]) -> bool {
        a.len() == b.len()
            && (0..a.len()).all(|i| (0..a.len()).all(|j| (a[i] == a[j]) == (b[i] == b[j])))
    }

    #[test]
    fn many_embeddings_are_clustered_in_two_levels_and_still_find_the_voices() {
        // 3 voices, 3 x 3000 noisy embeddings in time order: past the direct limit
        let mut rng = fastrand::Rng::with_seed(7);
        let dim = 32;
        let centres: Vec<Vec<f32>> = (0..3)
            .map(|_| normalised(&(0..dim).map(|_| rng.f32() - 0.5).collect::<Vec<_>>()))
            .collect();
        let mut truth = Vec::new();
        let embeddings: Vec<Vec<f32>> = (0..9000)
            .map(|i| {
                let who = (i / 250) % 3; // turns of 250 embeddings
                truth.push(who);
                centres[who]
                    .iter()
                    .map(|c| c + (rng.f32() - 0.5) * 0.08)
                    .collect()
            })
            .collect();
        assert!(embeddings.len() > DIRECT_LIMIT);
        let opts = ClusterOptions {
            threshold: 0.7,
            min_cluster_size: 2,
        };
        for bounds in [
            SpeakerBounds::default(),
            SpeakerBounds {
                num_speakers: Some(3),
                ..Default::default()
            },
        ] {
            let labels = cluster(&embeddings, &opts, bounds);
            assert_eq!(labels.iter().max(), Some(&2), "three voices");
            // the same partition as the truth, up to naming
            let mut map = [usize::MAX; 3];
            for (&l, &t) in labels.iter().zip(&truth) {
                if map[t] == usize::MAX {
                    map[t] = l;
                }
                assert_eq!(map[t], l);
            }
        }
    }

    #[test]
    fn threshold_finds_the_blobs() {
        let (xs, ys) = blobs(3, 6);
        let l = cluster(&xs, &opts(), SpeakerBounds::default());
        assert!(same_partition(&l, &ys), "{l:?}");
        assert_eq!(l[0], 0, "labels in order of first appearance");
    }

    #[test]
    fn num_speakers_forces_the_count() {
        let (xs, _) = blobs(3, 6);
        for k in 1..=5 {
            let b = SpeakerBounds {
                num_speakers: Some(k),
                ..Default::default()
            };
            let l = cluster(&xs, &opts(), b);
            assert_eq!(l.iter().max().unwrap() + 1, k);
        }
    }

    #[test]
    fn bounds_clamp_the_count() {
        let (xs, _) = blobs(3, 6);
        let b = SpeakerBounds {
            max_speakers: Some(2),
            ..Default::default()
        };
        assert_eq!(cluster(&xs, &opts(), b).iter().max().unwrap() + 1, 2);
        let b = SpeakerBounds {
            min_speakers: Some(4),
            ..Default::default()
        };
        assert_eq!(cluster(&xs, &opts(), b).iter().max().unwrap() + 1, 4);
    }

    #[test]
    fn small_clusters_join_the_nearest_large_one() {
        let (mut xs, _) = blobs(2, 6);
        // one stray point nearer blob 0 but far enough to stay alone at this threshold
        let mut stray = vec![0.0f32; 8];
        stray[0] = 0.6;
        stray[5] = 0.8;
        xs.push(stray);
        let loose = ClusterOptions {
            threshold: 0.3,
            min_cluster_size: 1,
        };
        let l = cluster(&xs, &loose, SpeakerBounds::default());
        assert_eq!(l.iter().max().unwrap() + 1, 3);
        let strict = ClusterOptions {
            threshold: 0.3,
            min_cluster_size: 3,
        };
        let l = cluster(&xs, &strict, SpeakerBounds::default());
        assert_eq!(l.iter().max().unwrap() + 1, 2);
        assert_eq!(l[12], l[0], "the stray joins blob 0");
    }
}

import Foundation
import Support

/// How far an estimate is from the exact value it estimates: the one home of every error metric
/// lnlens reports (DLA against the direct effect, AtP against activation patching).
public enum Metrics {
    /// NMAE in percent: `mean |estimate − exact| / mean |exact| · 100` over the pairs, which is
    /// `Σ |estimate − exact| / Σ |exact| · 100` (the means share their count). NaN without pairs;
    /// 0 when every difference and every exact value is 0; +∞ when only the exact values are all 0.
    public static func nmae(_ estimate: [Double], _ exact: [Double]) -> Double {
        precondition(estimate.count == exact.count)
        var err = 0.0, mag = 0.0
        for (e, x) in zip(estimate, exact) {
            err += abs(e - x)
            mag += abs(x)
        }
        return nmae(sumAbsError: err, sumAbsExact: mag, count: exact.count)
    }

    /// NMAE from its two sums (for accumulating over groups).
    public static func nmae(sumAbsError: Double, sumAbsExact: Double, count: Int) -> Double {
        if count == 0 { return .nan }
        if sumAbsExact == 0 { return sumAbsError == 0 ? 0 : .infinity }
        return sumAbsError / sumAbsExact * 100
    }

    /// Pearson's r; NaN with fewer than two points or a constant series.
    public static func pearson(_ x: [Double], _ y: [Double]) -> Double {
        precondition(x.count == y.count)
        guard x.count >= 2 else { return .nan }
        let n = Double(x.count)
        let mx = x.reduce(0, +) / n, my = y.reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for (a, b) in zip(x, y) {
            sxy += (a - mx) * (b - my)
            sxx += (a - mx) * (a - mx)
            syy += (b - my) * (b - my)
        }
        guard sxx > 0, syy > 0 else { return .nan }
        return sxy / (sxx * syy).squareRoot()
    }

    /// Spearman's ρ: Pearson's r of the ranks, ties sharing their mean rank.
    public static func spearman(_ x: [Double], _ y: [Double]) -> Double {
        pearson(ranks(x), ranks(y))
    }

    /// Ranks with 1 = smallest (`descending`: 1 = largest); tied values share the mean of their ranks.
    public static func ranks(_ values: [Double], descending: Bool = false) -> [Double] {
        let order = values.indices.sorted { descending ? values[$0] > values[$1] : values[$0] < values[$1] }
        var ranks = [Double](repeating: 0, count: values.count)
        var start = 0
        while start < order.count {
            var end = start
            while end + 1 < order.count, values[order[end + 1]] == values[order[start]] { end += 1 }
            let shared = Double(start + end) / 2 + 1
            for k in start...end { ranks[order[k]] = shared }
            start = end + 1
        }
        return ranks
    }

    /// The share of pairs whose signs agree, over the pairs whose |exact| is at least `fraction`
    /// of the largest |exact| (small effects have no meaningful sign). NaN when none qualifies.
    public static func signAgreement(_ estimate: [Double], _ exact: [Double], fraction: Double = 0.01) -> Double {
        let largest = exact.map(abs).max() ?? 0
        guard largest > 0 else { return .nan }
        var agree = 0, total = 0
        for (e, x) in zip(estimate, exact) where abs(x) >= fraction * largest {
            total += 1
            if (e > 0) == (x > 0) && e != 0 { agree += 1 }
        }
        return total == 0 ? .nan : Double(agree) / Double(total)
    }

    /// Top-k recall: of the k pairs with the largest |exact|, the share that are also among the k
    /// with the largest |estimate| (ties broken by index, so the value is deterministic).
    public static func topKRecall(_ estimate: [Double], _ exact: [Double], k: Int) -> Double {
        let k = min(k, exact.count)
        guard k > 0 else { return .nan }
        func top(_ v: [Double]) -> Set<Int> {
            Set(v.indices.sorted { abs(v[$0]) != abs(v[$1]) ? abs(v[$0]) > abs(v[$1]) : $0 < $1 }.prefix(k))
        }
        return Double(top(exact).intersection(top(estimate)).count) / Double(k)
    }
}

/// A two-sided confidence interval.
public struct ConfidenceInterval: Sendable, Codable, Equatable {
    public var low: Double
    public var high: Double

    public init(low: Double, high: Double) {
        self.low = low
        self.high = high
    }
}

/// How the NMAE bootstrap resamples a set of (prompt, head) pairs.
public enum BootstrapScheme: String, Sendable, Codable, CaseIterable {
    /// Heads and prompts resampled independently (the paper's `run_analysis.py`): the interval
    /// also covers which heads the model happens to have. The default.
    case crossed
    /// (prompt, head) pairs resampled as one population (what lnlens did before it had the
    /// crossed scheme): narrower, as it takes every pair as independent although the pairs of one
    /// head (and of one prompt) are alike.
    case pairs
}

extension Metrics {
    /// Resamples of the NMAE bootstrap (the paper's figure uses 1,000).
    public static let bootstrapResamples = 1000
    /// Seed of the bootstrap's SplitMix64: the same rows give the same interval on every machine.
    public static let bootstrapSeed: UInt64 = 0

    /// Percentile-bootstrap interval of `nmae(estimate, exact)`: `resamples` times, draw
    /// `count` pairs with replacement (SplitMix64 from `seed`, indices by `next(below:)`), take
    /// the NMAE of the draw; the interval is the (1 − level)/2 and (1 + level)/2 quantiles of
    /// those NMAEs, linearly interpolated between order statistics (numpy's default
    /// `percentile`). Pairs stay pairs: a draw picks one (prompt, component) with both values.
    /// NaN bounds without pairs.
    public static func bootstrapNMAE(_ estimate: [Double], _ exact: [Double], resamples: Int = bootstrapResamples,
                                     seed: UInt64 = bootstrapSeed, level: Double = 0.95) -> ConfidenceInterval {
        precondition(estimate.count == exact.count && resamples > 0 && level > 0 && level < 1)
        let n = exact.count
        guard n > 0 else { return ConfidenceInterval(low: .nan, high: .nan) }
        let absError = zip(estimate, exact).map { abs($0 - $1) }, absExact = exact.map(abs)
        var rng = SplitMix64(seed: seed)
        var values: [Double] = []
        values.reserveCapacity(resamples)
        for _ in 0..<resamples {
            var err = 0.0, mag = 0.0
            for _ in 0..<n {
                let i = rng.next(below: n)
                err += absError[i]
                mag += absExact[i]
            }
            values.append(nmae(sumAbsError: err, sumAbsExact: mag, count: n))
        }
        values.sort()
        return ConfidenceInterval(low: quantile(sorted: values, (1 - level) / 2),
                                  high: quantile(sorted: values, (1 + level) / 2))
    }

    /// Percentile-bootstrap interval of the NMAE of a block of (row, prompt) cells, rows and
    /// prompts resampled independently ("crossed", as the paper's `run_analysis.py` does for its
    /// heads and samples): `resamples` times, draw `rows` row indices and then `prompts` prompt
    /// indices with replacement (SplitMix64 from `seed`, `next(below:)`), and take the NMAE of the
    /// rows × prompts block they select, every selected cell counted as often as its row and its
    /// prompt were drawn. Quantiles as `bootstrapNMAE`. `absError` and `absExact` are row-major
    /// (rows, prompts): |estimate − exact| and |exact| of each cell (a missing cell: 0 in both).
    /// NaN bounds without cells.
    public static func bootstrapNMAECrossed(absError: [Double], absExact: [Double], rows: Int, prompts: Int,
                                            resamples: Int = bootstrapResamples, seed: UInt64 = bootstrapSeed,
                                            level: Double = 0.95) -> ConfidenceInterval {
        precondition(absError.count == rows * prompts && absExact.count == rows * prompts)
        precondition(resamples > 0 && level > 0 && level < 1)
        guard rows > 0, prompts > 0 else { return ConfidenceInterval(low: .nan, high: .nan) }
        var rng = SplitMix64(seed: seed)
        var rowCount = [Int](repeating: 0, count: rows), promptCount = [Int](repeating: 0, count: prompts)
        var drawn: [(prompt: Int, times: Double)] = []
        var values: [Double] = []
        values.reserveCapacity(resamples)
        for _ in 0..<resamples {
            for i in 0..<rows { rowCount[i] = 0 }
            for j in 0..<prompts { promptCount[j] = 0 }
            for _ in 0..<rows { rowCount[rng.next(below: rows)] += 1 }
            for _ in 0..<prompts { promptCount[rng.next(below: prompts)] += 1 }
            drawn.removeAll(keepingCapacity: true)
            for j in 0..<prompts where promptCount[j] > 0 { drawn.append((j, Double(promptCount[j]))) }
            var err = 0.0, mag = 0.0
            for i in 0..<rows where rowCount[i] > 0 {
                var e = 0.0, m = 0.0
                let base = i * prompts
                for (j, times) in drawn {
                    e += times * absError[base + j]
                    m += times * absExact[base + j]
                }
                err += Double(rowCount[i]) * e
                mag += Double(rowCount[i]) * m
            }
            values.append(nmae(sumAbsError: err, sumAbsExact: mag, count: rows * prompts))
        }
        values.sort()
        return ConfidenceInterval(low: quantile(sorted: values, (1 - level) / 2),
                                  high: quantile(sorted: values, (1 + level) / 2))
    }

    /// The q-quantile (0 ≤ q ≤ 1) of ascending `sorted` values, linearly interpolated between the
    /// order statistics at ranks `q · (n − 1)` (numpy's default). NaN when empty.
    public static func quantile(sorted: [Double], _ q: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let rank = q * Double(sorted.count - 1)
        let lower = Int(rank.rounded(.down)), upper = min(lower + 1, sorted.count - 1)
        let fraction = rank - Double(lower)
        if fraction == 0 || sorted[lower] == sorted[upper] { return sorted[lower] }
        return sorted[lower] + (sorted[upper] - sorted[lower]) * fraction
    }
}

import Support

extension Metrics {
    /// The companion's `MetricsSummary.calculate_bootstrap_ci` (`analyse_models.py`): `resamples`
    /// times, draw `values.count` values with replacement by `np.random.RandomState(42).choice`
    /// (a fresh generator per call, `MersenneTwister`), take each draw's mean; the interval is the
    /// 2.5th and 97.5th percentiles of those means (numpy's linear interpolation). NaN bounds
    /// without values.
    public static func bootstrapMeanInterval(_ values: [Double], resamples: Int, seed: UInt32 = 42,
                                             level: Double = 0.95) -> ConfidenceInterval {
        let n = values.count
        guard n > 0, resamples > 0 else { return ConfidenceInterval(low: .nan, high: .nan) }
        var rng = MersenneTwister(seed: seed)
        var means = [Double](repeating: 0, count: resamples)
        values.withUnsafeBufferPointer { v in
            for r in 0..<resamples {
                var total = 0.0
                for _ in 0..<n { total += v[rng.next(below: n)] }
                means[r] = total / Double(n)
            }
        }
        means.sort()
        return ConfidenceInterval(low: quantile(sorted: means, (1 - level) / 2), high: quantile(sorted: means, (1 + level) / 2))
    }
}

import Support

extension Metrics {
    /// The companion's bootstrap (`analyse_models.py`: `calculate_bootstrap_ci` and
    /// `calculate_ece_with_ci`): `resamples` times, draw `count` indices with replacement as
    /// `np.random.RandomState(42).choice` does (a fresh generator per call, `MersenneTwister`), and
    /// take `statistic` of the draw; the interval is the 2.5th and 97.5th percentiles of those
    /// values (numpy's linear interpolation). NaN bounds without values.
    public static func companionBootstrap(count n: Int, resamples: Int, seed: UInt32 = 42, level: Double = 0.95,
                                          statistic: ([Int]) -> Double) -> ConfidenceInterval {
        guard n > 0, resamples > 0 else { return ConfidenceInterval(low: .nan, high: .nan) }
        var rng = MersenneTwister(seed: seed)
        var indices = [Int](repeating: 0, count: n), values = [Double](repeating: 0, count: resamples)
        for r in 0..<resamples {
            for i in 0..<n { indices[i] = rng.next(below: n) }
            values[r] = statistic(indices)
        }
        values.sort()
        return ConfidenceInterval(low: quantile(sorted: values, (1 - level) / 2), high: quantile(sorted: values, (1 + level) / 2))
    }

    /// `calculate_bootstrap_ci`: the interval of the mean of `values`.
    public static func bootstrapMeanInterval(_ values: [Double], resamples: Int) -> ConfidenceInterval {
        values.withUnsafeBufferPointer { v in
            companionBootstrap(count: v.count, resamples: resamples) { $0.reduce(0) { $0 + v[$1] } / Double(v.count) }
        }
    }

    /// The expected calibration error over `indices` (default every entry) as the companion's
    /// `calculate_ece_with_ci` computes it: confidences binned by `np.digitize` on the edges of
    /// `np.linspace(0, 1, bins + 1)` (the last bin takes 1), then Σ_b n_b / n · |mean confidence_b
    /// − mean accuracy_b|.
    public static func calibrationError(confidence: [Double], correct: [Double], indices: [Int]? = nil, bins: Int = 10) -> Double {
        let edges = (0...bins).map { $0 == bins ? 1 : Double($0) * (1 / Double(bins)) }
        var count = [Double](repeating: 0, count: bins), conf = count, acc = count
        for i in indices ?? Array(confidence.indices) {
            let c = confidence[i]
            let b = min(bins - 1, max(0, edges.lastIndex { $0 <= c } ?? -1))
            (count[b], conf[b], acc[b]) = (count[b] + 1, conf[b] + c, acc[b] + correct[i])
        }
        let total = count.reduce(0, +)
        return (0..<bins).filter { count[$0] > 0 }.reduce(0) { $0 + count[$1] / total * abs(conf[$1] / count[$1] - acc[$1] / count[$1]) }
    }
}

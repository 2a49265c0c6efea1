import Analysis
import Foundation
import Support
import Testing

/// The task check, the estimator errors without structural zeros, and the NMAE bootstrap against
/// numpy/scipy (scripts/reference/make_statistics_fixtures.py, fixtures under
/// Tests/Fixtures/reference/statistics/).
@Suite struct StatisticsReferenceTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/reference/statistics")

    static func load<T: Decodable>(_ name: String, as: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(contentsOf: folder.appendingPathComponent(name)))
    }

    /// |a − b| ≤ 1e-9 · max(1, |b|).
    static func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) <= 1e-9 * max(1, abs(b)) }

    struct Bootstrap: Decodable {
        struct Draw: Decodable { let heads: [Int]; let prompts: [Int] }
        let resamples: Int
        let seed: UInt64
        let rows: [ComponentAttribution]
        let crossed: [String: [Double]]
        let pairs: [String: [Double]]
        let global_first_draws: [Draw]
    }

    /// The generator's draws are those the Python re-implementation made (heads, then prompts).
    @Test func splitMixDrawsMatchPython() throws {
        let ref = try Self.load("bootstrap.json", as: Bootstrap.self)
        var rng = SplitMix64(seed: ref.seed)
        for draw in ref.global_first_draws {
            #expect(draw.heads.map { _ in rng.next(below: 6) } == draw.heads)
            #expect(draw.prompts.map { _ in rng.next(below: 9) } == draw.prompts)
        }
    }

    /// Global, per-layer and per-head intervals of both schemes equal numpy's, with lnlens's
    /// defaults (1,000 resamples, seed 0) and whatever the order of the rows.
    @Test(arguments: [BootstrapScheme.crossed, .pairs])
    func bootstrapIntervalsMatchNumpy(scheme: BootstrapScheme) throws {
        let ref = try Self.load("bootstrap.json", as: Bootstrap.self)
        #expect(ref.resamples == Metrics.bootstrapResamples && ref.seed == Metrics.bootstrapSeed)
        let expected = scheme == .crossed ? ref.crossed : ref.pairs
        for rows in [ref.rows, ref.rows.reversed()] {
            let got = NMAEIntervals(rows: rows, scheme: scheme)
            var all: [String: ConfidenceInterval] = ["all": got.headsGlobal]
            for (k, v) in got.perLayer { all[HeadSet.layer(k).description] = v }
            for (k, v) in got.perHead { all[k.description] = v }
            #expect(Set(all.keys) == Set(expected.keys))
            for (key, bounds) in expected {
                let ci = try #require(all[key])
                #expect(Self.close(ci.low, bounds[0]) && Self.close(ci.high, bounds[1]),
                        "\(scheme) \(key): \(ci.low)–\(ci.high), numpy \(bounds[0])–\(bounds[1])")
            }
        }
        let ci = expected["all"]!
        print("\(scheme) bootstrap, all heads: \(ci[0])–\(ci[1]) % (numpy)")
    }

    /// Resampling heads as well as prompts widens the global interval on this table (its heads
    /// differ a lot): the pairs scheme understates the uncertainty the paper's method reports.
    @Test func crossedIntervalIsWiderThanPairsHere() throws {
        let ref = try Self.load("bootstrap.json", as: Bootstrap.self)
        let crossed = NMAEIntervals(rows: ref.rows).headsGlobal, pairs = NMAEIntervals(rows: ref.rows, scheme: .pairs).headsGlobal
        #expect(crossed.high - crossed.low > pairs.high - pairs.low)
    }

    struct Errors: Decodable {
        struct Sample: Decodable { let prompt: Int; let site: String; let layer: Int; let position: Int; let activation: Double; let atp: Double }
        struct Expected: Decodable {
            let layer: Int?
            let normalized: Bool
            let nmae: Double, n: Double, n_structural_zeros: Double
            let pearson: Double, spearman: Double, sign_agreement: Double, topk_recall_10: Double, topk_recall_5pct: Double
            let with_zeros: [String: Double]
        }
        let samples: [Sample]
        let first_diff: [Int]
        let clean: [Double]
        let corrupt: [Double]
        let min_gap: Double
        let expected: [Expected]
    }

    static func samples(_ ref: Errors, marked: Bool) -> [EstimatorError.Sample] {
        ref.samples.map { s in
            EstimatorError.Sample(prompt: s.prompt, site: PatchSite(rawValue: s.site)!, layer: s.layer, activation: s.activation,
                                  estimates: [.atp: s.atp],
                                  structuralZero: marked ? s.position < ref.first_diff[s.prompt] : nil)
        }
    }

    /// Structural zeros leave Pearson, Spearman, sign agreement and top-k recall (and are counted
    /// apart); the prompt below min_gap leaves every metric; NMAE keeps the zeros. Without the
    /// marks (older runs) the exact-zero rule finds the same entries.
    @Test(arguments: [true, false])
    func estimatorErrorsLeaveOutStructuralZeros(marked: Bool) throws {
        let ref = try Self.load("estimator_errors.json", as: Errors.self)
        let gaps = Dictionary(uniqueKeysWithValues: ref.clean.indices.map { ($0, ref.clean[$0] - ref.corrupt[$0]) })
        let got = EstimatorError.errors(Self.samples(ref, marked: marked), gaps: gaps, minGap: ref.min_gap)
        #expect(Set(got.map(\.metric)) == Set(ErrorMetric.allCases))
        for e in ref.expected {
            func value(_ metric: String) throws -> Double {
                try #require(got.first { $0.layer == e.layer && $0.normalized == e.normalized && $0.metric.rawValue == metric }?.value)
            }
            let pairs: [(String, Double)] = [("nmae", e.nmae), ("n", e.n), ("n_structural_zeros", e.n_structural_zeros),
                                             ("pearson", e.pearson), ("spearman", e.spearman), ("sign_agreement", e.sign_agreement),
                                             ("topk_recall_10", e.topk_recall_10), ("topk_recall_5pct", e.topk_recall_5pct)]
            for (metric, expected) in pairs {
                let v = try value(metric)
                #expect(Self.close(v, expected), "layer \(e.layer ?? -1) normalised \(e.normalized) \(metric): \(v) vs \(expected)")
            }
        }
        // The zeros change the correlations: the same groups with them differ from scipy's values without.
        let all = ref.expected.first { $0.layer == nil && !$0.normalized }!
        #expect(abs(all.with_zeros["spearman"]! - all.spearman) > 0.01)
        let kept = ref.samples.filter { abs(gaps[$0.prompt]!) >= ref.min_gap }
        #expect(Self.close(Metrics.spearman(kept.map(\.atp), kept.map(\.activation)), all.with_zeros["spearman"]!))
    }

    struct Task: Decodable {
        let clean: [Double], corrupt: [Double], min_gap: Double
        let mean_clean: Double, fraction_correct: Double, mean_abs_gap: Double, median_abs_gap: Double
        let small_gap: [Int]
    }

    /// Mean clean metric, fraction correct, mean and median |gap| and the small-gap prompts
    /// (here two with a gap of exactly 0) as numpy computes them; stored as summaries and read back.
    @Test func taskCheckMatchesNumpy() throws {
        let ref = try Self.load("task_check.json", as: Task.self)
        let clean = Dictionary(uniqueKeysWithValues: ref.clean.enumerated().map { ($0, $1) })
        let corrupt = Dictionary(uniqueKeysWithValues: ref.corrupt.enumerated().map { ($0, $1) })
        let check = TaskCheck(clean: clean, corrupt: corrupt, minGap: ref.min_gap)
        #expect(check.prompts == ref.clean.count)
        #expect(Self.close(check.meanClean, ref.mean_clean) && Self.close(check.fractionCorrect, ref.fraction_correct))
        #expect(Self.close(try #require(check.meanAbsGap), ref.mean_abs_gap))
        #expect(Self.close(try #require(check.medianAbsGap), ref.median_abs_gap))
        #expect(check.smallGap == ref.small_gap && check.smallGap.contains(4) && check.smallGap.contains(9))
        #expect(check.passed == (ref.fraction_correct >= 0.75 && ref.mean_abs_gap >= ref.min_gap))
        #expect(TaskCheck(summaryValues: check.summaryValues) == check)
        #expect(check.line().contains("\(ref.small_gap.count) of \(ref.clean.count) prompts below --min-gap 0.5"))
        // Without corrupt prompts: no gap, and the verdict rests on the mean clean metric.
        let cleanOnly = TaskCheck(clean: clean, corrupt: [:], minGap: ref.min_gap)
        #expect(cleanOnly.meanAbsGap == nil && cleanOnly.smallGap.isEmpty)
        #expect(cleanOnly.passed == (ref.fraction_correct >= 0.75 && ref.mean_clean >= ref.min_gap))
        // A model that does the task passes; one that does not gets one warning naming why.
        let good = TaskCheck(clean: [0: 2, 1: 3, 2: 1.5, 3: -0.2], corrupt: [0: -1, 1: 0, 2: 0, 3: -1], minGap: 0.5)
        #expect(good.passed == true && good.warning(model: "m") == nil)
        let bad = TaskCheck(clean: [0: 0.01, 1: -0.02], corrupt: [0: 0, 1: 0], minGap: 0.5)
        #expect(bad.passed == false && bad.failures.count == 2)
        #expect(bad.warning(model: "gpt2-tiny")?.contains("gpt2-tiny does not do this task (50 % correct, under 75 %") == true)
    }
}

import Analysis
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support
import Testing
import Training

/// `compare` on the test checkpoints against Tests/Fixtures/reference/compare, made by
/// `scripts/reference/make_compare_fixtures.py`: the companion's own `run_inference.py` metrics,
/// `JSDivergence`, `FormatInference` records, `MetricsSummary.calculate_bootstrap_ci` and
/// `calculate_ece_with_ci`
/// (submarat/removing-layer-norm a15a638), with tiny-ln as the original and tiny-lnfree compared
/// with it and the other way round, on nine held-out windows of 16 tokens (three reading a
/// document boundary). The job runs end to end into a database.
@Suite struct CompareReferenceTests {
    static let folder = DLATests.fixtures.appendingPathComponent("reference/compare")

    struct Token: Decodable { let unit: Int; let position: Int; let kind: String; let values: [String: Double] }
    struct Summary: Decodable { let scope: String; let key: String; let mean: Double; let ci_low: Double; let ci_high: Double; let n: Int }
    struct Reference: Decodable {
        let models: [String]
        let windows: [[Int]]
        let context: Int
        let tokens: [Token]
        let summaries: [Summary]
    }

    static func reference(_ file: String) throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: folder.appendingPathComponent("\(file).json")))
    }

    static func model(_ name: String) throws -> (GPT2Model, String) {
        let checkpoint = try Checkpoint.open(DLATests.fixtures.appendingPathComponent("models/\(name)").path)
        return (try GPT2Model(checkpoint: checkpoint, processing: .all), try checkpoint.weightsHash())
    }

    /// The windows end to end, cut again into windows of `context`.
    static func input(_ ref: Reference) -> AnalysisInput {
        .windows(TokenCorpus(path: "heldout-windows", tokens: ref.windows.flatMap { $0 }.map { Int32($0) }, documents: 1), context: ref.context)
    }

    /// The compare job of `models` (the original first) over `input`, with `shard`.
    static func job(_ models: [String], _ input: AnalysisInput, batch: Int = 4, shard: Shard? = nil) throws -> AnalysisJob<CompareAnalysis> {
        let loaded = try models.map(model)
        var options = AnalysisOptions()
        (options.computation.batch, options.computation.chunkSize, options.record.shard) = (batch, 4, shard?.description)
        var analysis = CompareAnalysis(options: options)
        analysis.others = loaded.dropFirst().map(\.0)
        var job = AnalysisJob(analysis: analysis, model: loaded[0].0, modelPath: models.joined(separator: " | "),
                              modelHash: loaded.map(\.1).joined(separator: ","), input: input, options: options, toolVersion: "test")
        job.shard = shard
        return job
    }

    @Test(arguments: ["ln-vs-lnfree", "lnfree-vs-ln"])
    func everyTokenAndSummaryIsTheCompanions(file: String) throws {
        let ref = try Self.reference(file)
        let db = try ResultsDatabase.inMemory()
        let id = try Self.job(ref.models, Self.input(ref)).run(db: db)
        let rows = try db.results(runID: id)
        var stored: [String: Double] = [:]
        for r in rows where r.site != StoreName.inputSite { stored["\(r.promptIndex).\(r.position!).\(r.quantity).\(r.site)"] = r.value }
        let eots = Set(rows.filter { $0.quantity == StoreName.eot }.map { [$0.promptIndex, $0.position!] })
        var worst = 0.0
        for t in ref.tokens {
            #expect((t.kind == "eot") == eots.contains([t.unit, t.position]), "unit \(t.unit) position \(t.position)")
            for (name, value) in t.values {
                let got = try #require(stored["\(t.unit).\(t.position).\(name)"], "\(name) at unit \(t.unit) position \(t.position)")
                worst = max(worst, abs(got - value))
                #expect(abs(got - value) <= 1e-4, "\(name) at unit \(t.unit) position \(t.position): \(got) vs \(value)")
            }
        }
        #expect(stored.count == ref.tokens.count * ref.tokens[0].values.count)
        let summaries = try db.summaries(runID: id)
        func value(_ s: Summary, _ metric: String) -> Double? {
            summaries.first { $0.scope == s.scope && $0.key == s.key && $0.metric == metric }?.value
        }
        var worstSummary = 0.0
        for s in ref.summaries {
            #expect(value(s, "n") == Double(s.n), "\(s.scope) \(s.key)")
            for (metric, expected) in [(s.scope == StoreName.ece ? "value" : "mean", s.mean), ("ci_low", s.ci_low), ("ci_high", s.ci_high)] {
                let got = try #require(value(s, metric), "\(s.scope) \(s.key) \(metric)")
                worstSummary = max(worstSummary, abs(got - expected))
                #expect(abs(got - expected) <= 1e-4, "\(s.scope) \(s.key) \(metric): \(got) vs \(expected)")
            }
        }
        #expect(Set(summaries.filter { $0.metric == "mean" || $0.metric == "value" }.map { "\($0.scope) \($0.key)" }) == Set(ref.summaries.map { "\($0.scope) \($0.key)" }))
        print("compare \(file): worst token difference \(worst), worst summary difference \(worstSummary)")
    }

    @Test func shardsMergeToTheUnshardedRun() throws {
        let ref = try Self.reference("ln-vs-lnfree")
        let whole = try ResultsDatabase.inMemory()
        let id = try Self.job(ref.models, Self.input(ref), batch: 1).run(db: whole)
        var shardRows: [ResultRow] = []
        for i in 0..<2 {
            let db = try ResultsDatabase.inMemory()
            let shard = try Shard(index: i, count: 2)
            shardRows += try db.results(runID: try Self.job(ref.models, Self.input(ref), batch: 1, shard: shard).run(db: db))
        }
        func key(_ r: ResultRow) -> String { "\(r.promptIndex) \(r.site) \(r.position ?? -1) \(r.quantity)" }
        let a = try whole.results(runID: id).sorted { key($0) < key($1) }, b = shardRows.sorted { key($0) < key($1) }
        #expect(a.map(key) == b.map(key))
        #expect(a.map(\.value) == b.map(\.value))
        func table(_ s: [SummaryRow]) -> [String: Double] {
            Dictionary(s.filter { $0.scope != StoreName.scopeCheck }.map { ("\($0.scope) \($0.key) \($0.metric)", $0.value) }, uniquingKeysWith: { a, _ in a })
        }
        let merged = table(CompareAnalysis.summaries(from: b)), unsharded = table(try whole.summaries(runID: id))
        #expect(!merged.isEmpty && merged == unsharded)
    }

    struct Calibration: Decodable { let confidence: [Double]; let correct: [Double]; let ece: Double; let ci_low: Double; let ci_high: Double }

    /// The companion's `calculate_ece_with_ci` on synthetic confidences over every bin, the edges
    /// 0.3 and 1 included (calibration.json).
    @Test func calibrationErrorIsTheCompanions() throws {
        let cases = try JSONDecoder().decode([Calibration].self, from: Data(contentsOf: Self.folder.appendingPathComponent("calibration.json")))
        #expect(cases.count == 2)
        for c in cases {
            let ece = Metrics.calibrationError(confidence: c.confidence, correct: c.correct)
            let ci = Metrics.companionBootstrap(count: c.confidence.count, resamples: CompareAnalysis.bootstrapResamples) {
                Metrics.calibrationError(confidence: c.confidence, correct: c.correct, indices: $0)
            }
            #expect(abs(ece - c.ece) <= 1e-12 && abs(ci.low - c.ci_low) <= 1e-12 && abs(ci.high - c.ci_high) <= 1e-12,
                    "\(c.confidence.count) values: \(ece) [\(ci.low), \(ci.high)] vs \(c.ece) [\(c.ci_low), \(c.ci_high)]")
        }
    }

    /// numpy 2.2's `RandomState(42)`: `randint(0, 1000, size=5)`, `choice(np.arange(10.0), size=8)`
    /// and `randint(0, 2**31, size=3)` (the first three raw outputs, masked to 31 bits).
    @Test func mersenneTwisterDrawsAsNumpy() {
        var a = MersenneTwister(seed: 42)
        #expect((0..<5).map { _ in a.next(below: 1000) } == [102, 435, 860, 270, 106])
        var b = MersenneTwister(seed: 42)
        #expect((0..<8).map { _ in b.next(below: 10) } == [6, 3, 7, 4, 6, 9, 2, 6])
        var c = MersenneTwister(seed: 42)
        #expect((0..<3).map { _ in c.next(below: 1 << 31) } == [1_608_637_542, 1_273_642_419, 1_935_803_228])
    }
}

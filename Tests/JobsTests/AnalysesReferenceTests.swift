import Analysis
import Foundation
import GPT2
import Jobs
import ResultsStore
import Testing
import Training

/// `sinks`, `norms` and `lens` on the test checkpoints against Tests/Fixtures/reference/analyses,
/// made by `scripts/reference/make_analyses_fixtures.py`: the companion's own
/// `calculate_sink_rate` and `ResidualNorms` (submarat/removing-layer-norm a15a638) and
/// TransformerLens 2.16.1's `accumulated_resid(apply_ln=True) @ W_U + b_U`, on six held-out
/// windows of 16 tokens and five IOI prompts with BOS. Each job runs end to end into a database.
@Suite struct AnalysesReferenceTests {
    static let folder = DLATests.fixtures.appendingPathComponent("reference/analyses")

    struct Manifest: Decodable {
        struct Prompt: Decodable { let prompt: String; let answer: String; let tokens: [Int]; let answer_id: Int }
        let windows: [[Int]]
        let prompts: [Prompt]
        let sink_eps: [Double]
    }

    struct Sinks: Decodable {
        let per_head: [[[Double]]]
        let companion_all: [Double]
        let companion_layer: [[Double]]
        let mean: Double, ci_low: Double, ci_high: Double, q25: Double, q75: Double, median: Double
    }

    struct Curve: Decodable { let x: [Int]; let mean: [Double]; let sd: [Double?] }

    struct Norms: Decodable {
        let hooks: [String]
        let l2_norms: [String: [[Double]]]
        let curves: [String: Curve]
        enum CodingKeys: String, CodingKey { case hooks, l2_norms }
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            hooks = try c.decode([String].self, forKey: .hooks)
            l2_norms = try c.decode([String: [[Double]]].self, forKey: .l2_norms)
            let all = try decoder.container(keyedBy: AnyKey.self)
            var curves: [String: Curve] = [:]
            for key in all.allKeys where key.stringValue.contains(".") { curves[key.stringValue] = try all.decode(Curve.self, forKey: key) }
            self.curves = curves
        }
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    struct Lens: Decodable {
        struct Entry: Decodable { let prob: Double; let rank: Double; let top1: Double; let kl: Double; let ties: Int }
        let labels: [String]
        let units: [[String: Entry]]
    }

    struct Reference: Decodable {
        let sinks: [String: Sinks]
        let norms: Norms
        let lens_text: Lens
        let lens_prompts: Lens
    }

    static let manifest = try! JSONDecoder().decode(Manifest.self, from: Data(contentsOf: folder.appendingPathComponent("manifest.json")))

    static func reference(_ name: String) throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: folder.appendingPathComponent("\(name).json")))
    }

    /// The fixture's windows are consecutive: a stream of them, cut again into windows of 16.
    static var windows: AnalysisInput {
        .windows(TokenCorpus(path: "heldout-windows", tokens: manifest.windows.flatMap { $0 }.map { Int32($0) }, documents: 1),
                 context: manifest.windows[0].count)
    }

    /// The fixture's prompts as a prompt file, read back by `PromptSet` with BOS.
    static func prompts() throws -> AnalysisInput {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lnlens-lens-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: url) }
        let lines = try manifest.prompts.map { p in
            String(decoding: try JSONSerialization.data(withJSONObject: ["prompt": p.prompt, "answer": p.answer], options: [.sortedKeys]),
                   as: UTF8.self)
        }
        try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
        let set = try PromptSet.load(url: url, tokenizer: try DLATests.tokenizer(), skipInvalid: false, prependBOS: true)
        #expect(set.examples.map(\.tokens) == manifest.prompts.map(\.tokens))
        #expect(set.examples.map(\.answerID) == manifest.prompts.map(\.answer_id))
        return .prompts(set)
    }

    /// Runs `A` on the test checkpoint `name` over `input` into a new in-memory database.
    static func run<A: SequenceAnalysis>(_: A.Type, _ name: String, _ input: AnalysisInput, batch: Int = 4,
                                         configure: (inout AnalysisOptions.Computation) -> Void = { _ in })
        throws -> (db: ResultsDatabase, id: Int64, rows: [ResultRow], summaries: [SummaryRow]) {
        let checkpoint = try Checkpoint.open(DLATests.fixtures.appendingPathComponent("models/\(name)").path)
        let model = try GPT2Model(checkpoint: checkpoint, processing: .all)
        var options = AnalysisOptions()
        (options.computation.batch, options.computation.chunkSize) = (batch, 4)
        configure(&options.computation)
        let job = AnalysisJob(analysis: A(options: options), model: model, modelPath: name, modelHash: try checkpoint.weightsHash(),
                              input: input, options: options, toolVersion: "test")
        let db = try ResultsDatabase.inMemory()
        let id = try job.run(db: db)
        return (db, id, try db.results(runID: id), try db.summaries(runID: id))
    }

    static func summary(_ s: [SummaryRow], _ scope: String, _ key: String, _ metric: String) -> Double? {
        s.first { $0.scope == scope && $0.key == key && $0.metric == metric }?.value
    }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func sinkRatesAreTheCompanions(model name: String) throws {
        let ref = try Self.reference(name)
        for eps in Self.manifest.sink_eps {
            let r = try #require(ref.sinks["\(eps)"])
            let (_, _, rows, summaries) = try Self.run(SinkAnalysis.self, name, Self.windows) { $0.eps = eps }
            let L = r.per_head[0].count, H = r.per_head[0][0].count
            var worst = 0.0
            for (w, layers) in r.per_head.enumerated() {
                for l in 0..<L {
                    for h in 0..<H {
                        let stored = try #require(rows.first { $0.promptIndex == w && $0.site == "pattern" && $0.layer == l && $0.head == h })
                        worst = max(worst, abs(stored.value - layers[l][h]))
                    }
                    // The companion's per-layer number divides by every head of every layer.
                    let layerMean = rows.filter { $0.promptIndex == w && $0.layer == l && $0.quantity == "sink_rate" }.map(\.value).reduce(0, +) / Double(H)
                    worst = max(worst, abs(layerMean / Double(L) - r.companion_layer[w][l]))
                }
                let all = rows.filter { $0.promptIndex == w && $0.quantity == "sink_rate" }.map(\.value).reduce(0, +) / Double(L * H)
                worst = max(worst, abs(all - r.companion_all[w]))
            }
            for (metric, value) in [("mean", r.mean), ("ci_low", r.ci_low), ("ci_high", r.ci_high), ("q25", r.q25), ("q75", r.q75),
                                    ("median", r.median)] {
                worst = max(worst, abs(try #require(Self.summary(summaries, "sink_rate", "all", metric)) - value))
            }
            print("\(name) sinks eps \(eps): max |diff| against calculate_sink_rate \(worst)")
            #expect(worst < 1e-6)
        }
    }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func normsAreTheCompanions(model name: String) throws {
        let ref = try Self.reference(name).norms
        let (_, _, rows, summaries) = try Self.run(NormAnalysis.self, name, Self.windows)
        func close(_ a: Double, _ b: Double) -> Double { abs(a - b) / max(1, abs(b)) }
        var worst = 0.0, compared = 0
        for (i, hook) in ref.hooks.enumerated() {
            let h = try #require(HookName(parsing: hook))
            for (w, norms) in try #require(ref.l2_norms[hook]).enumerated() {
                let stored = try #require(rows.first { $0.promptIndex == w && $0.site == h.point.shortName && $0.layer == h.layer
                                                       && $0.quantity == "norm" && $0.position == 0 })
                worst = max(worst, close(stored.value, norms[0]))
            }
            for measure in ["norm", "norm_ratio", "cosine"] where measure == "norm" || i > 0 {
                for (position, metric) in [("first", "first"), ("rest", "rest")] {
                    let curve = try #require(ref.curves["\(measure).\(position)"])
                    let x = measure == "norm" ? i : i - 1
                    worst = max(worst, close(try #require(Self.summary(summaries, measure, hook, "\(metric)_mean")), curve.mean[x]))
                    if let sd = curve.sd[x] {
                        worst = max(worst, close(try #require(Self.summary(summaries, measure, hook, "\(metric)_sd")), sd))
                    }
                    compared += 1
                }
            }
        }
        print("\(name) norms: \(compared) plotted means and sds, max relative |diff| against residual_norms.py \(worst)")
        #expect(worst < 1e-4)
    }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func lensIsTransformerLenss(model name: String) throws {
        let ref = try Self.reference(name)
        for (input, lens) in [(Self.windows, ref.lens_text), (try Self.prompts(), ref.lens_prompts)] {
            let (_, _, rows, _) = try Self.run(LensAnalysis.self, name, input) { $0.inclMid = true }
            var worst = (prob: 0.0, rank: 0.0, kl: 0.0)
            for (u, perLabel) in lens.units.enumerated() {
                for label in lens.labels {
                    let e = try #require(perLabel[label])
                    let (site, layer): (String, Int) = label == "final_post" ? ("resid_post", 1)
                        : (label.hasSuffix("pre") ? "resid_pre" : "resid_mid", Int(label.prefix { $0.isNumber })!)
                    func value(_ q: String) throws -> Double {
                        try #require(rows.first { $0.promptIndex == u && $0.site == site && $0.layer == layer && $0.quantity == q }).value
                    }
                    worst.prob = max(worst.prob, abs(try value("prob") - e.prob) / max(e.prob, 1e-12))
                    worst.kl = max(worst.kl, abs(try value("kl") - e.kl))
                    let rank = try value("rank"), top1 = try value("top1")
                    let rankDiff = abs(rank - e.rank)
                    #expect(rankDiff <= Double(e.ties), "\(name) unit \(u) \(label): rank \(rank) vs \(e.rank)")
                    worst.rank = max(worst.rank, rankDiff)
                    #expect(abs(top1 - e.top1) <= Double(e.ties))
                }
            }
            print("\(name) lens (\(input.unitName)): max relative |diff| prob \(worst.prob), |diff| KL \(worst.kl), mean rank \(worst.rank)")
            #expect(worst.prob < 1e-4 && worst.kl < 1e-4)
        }
    }

    /// For the LN-free model the lens is linear: the final read's probabilities are the model's.
    @Test func finalReadIsTheModelsOwnDistribution() throws {
        let (_, _, rows, _) = try Self.run(LensAnalysis.self, "tiny-lnfree", Self.windows)
        let final = rows.filter { $0.site == "resid_post" && $0.quantity == "kl" }
        #expect(final.count == Self.manifest.windows.count && final.allSatisfy { $0.value < 1e-9 })
    }
}

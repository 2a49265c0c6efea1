import Analysis
import Foundation
import GPT2
import Jobs
import ResultsStore
import Testing
import Training

/// `neurons` on the test checkpoints against Tests/Fixtures/reference/neurons, made by
/// `scripts/reference/make_neurons_fixtures.py`: the companion's own `svd_comparison.py` (run
/// whole), `AblationAnalyzer` (ablate_all_models.py) and `CumulativeAblation`
/// (cumulative_ablation.py) at a15a638, on six held-out windows of 16 tokens, the LN model's top
/// three neurons ablated in both models. The job runs end to end into a database.
@Suite struct NeuronsReferenceTests {
    static let folder = DLATests.fixtures.appendingPathComponent("reference/neurons")

    struct Manifest: Decodable {
        let windows: [[Int]]
        let neurons: [Int]
        let null_dims: Int
    }

    struct Weights: Decodable {
        let L2_Wout: [Double], `var`: [Double], ratio: [Double], top_indices: [Int], norm_S: [Double], cos_sim: [Double]
        let null_fraction: [Double]
    }

    struct Ablation: Decodable {
        struct Cumulative: Decodable { let k: Int; let loss_mean: Double; let loss_sd: Double; let entropy_mean: Double; let entropy_sd: Double }
        let tokens: Int
        let simulated_loss: Double, simulated_entropy: Double
        let individual: [String: [String: Double]]
        let cumulative: [Cumulative]
        let mean_activation: [Double]
    }

    struct Reference: Decodable { let weights: Weights; let ablation: Ablation }

    static let manifest = try! JSONDecoder().decode(Manifest.self, from: Data(contentsOf: folder.appendingPathComponent("manifest.json")))

    static func reference(_ name: String) throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: folder.appendingPathComponent("\(name).json")))
    }

    static var windows: AnalysisInput {
        .windows(TokenCorpus(path: "heldout-windows", tokens: manifest.windows.flatMap { $0 }.map { Int32($0) }, documents: 1),
                 context: manifest.windows[0].count)
    }

    static func model(_ name: String) throws -> (GPT2Model, String) {
        let checkpoint = try Checkpoint.open(DLATests.fixtures.appendingPathComponent("models/\(name)").path)
        return (try GPT2Model(checkpoint: checkpoint, processing: .all), try checkpoint.weightsHash())
    }

    /// Runs the job on `name` (the fixture's neurons, batch `batch`, shard `shard`) into `db`.
    static func run(_ name: String, db: ResultsDatabase, batch: Int = 4, shard: Shard? = nil) throws -> Int64 {
        let (model, hash) = try model(name)
        var options = NeuronOptions()
        (options.computation.batch, options.computation.nullDims) = (batch, manifest.null_dims)
        options.computation.neurons = manifest.neurons.map(String.init).joined(separator: ",")
        options.computation.windows = manifest.windows.count
        var job = NeuronJob(model: model, modelPath: name, modelHash: hash, input: windows, options: options, toolVersion: "test")
        job.shard = shard
        return try job.run(db: db)
    }

    static func summary(_ s: [SummaryRow], _ scope: String, _ key: String, _ metric: String) throws -> Double {
        try #require(s.first { $0.scope == scope && $0.key == key && $0.metric == metric }?.value, "\(scope) \(key) \(metric)")
    }

    /// |a − b| relative to max(1, |b|): absolute for values below 1.
    static func close(_ a: Double, _ b: Double) -> Double { abs(a - b) / max(1, abs(b)) }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func weightsAreSVDComparisons(model name: String) throws {
        let ref = try Self.reference(name).weights
        let (model, _) = try Self.model(name)
        let w = try EntropyNeurons.weights(model: model, nullDims: Self.manifest.null_dims)
        var worst = (norm: 0.0, ratio: 0.0, svd: 0.0)
        for n in ref.L2_Wout.indices {
            worst.norm = max(worst.norm, Self.close(w.norm[n], ref.L2_Wout[n]), Self.close(w.nullFraction[n], ref.null_fraction[n]))
            // ratio and LogitVar are ratios: relative
            worst.ratio = max(worst.ratio, abs(w.ratio[n] / ref.ratio[n] - 1), abs(w.logitVar[n] / ref.var[n] - 1))
        }
        for (j, s) in ref.norm_S.enumerated() {
            worst.svd = max(worst.svd, Self.close(w.singularValues[j], s), Self.close(w.cosines(of: w.ranking[0])[w.dModel * w.ranking[0] + j], ref.cos_sim[j]))
        }
        print("\(name) weights: max |diff| ‖w_out‖ and null fraction \(worst.norm), relative ratio and LogitVar \(worst.ratio), SVD \(worst.svd)")
        #expect(w.ranking == ref.top_indices.map { $0 } || Array(w.ranking.prefix(ref.top_indices.count)) == ref.top_indices)
        #expect(worst.norm < 1e-4 && worst.ratio < 1e-4 && worst.svd < 1e-4)
    }

    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func ablationsAreTheCompanions(model name: String) throws {
        let ref = try Self.reference(name).ablation
        let db = try ResultsDatabase.inMemory()
        let id = try Self.run(name, db: db)
        let s = try db.summaries(runID: id)
        typealias N = StoreName.Neurons
        var worst = 0.0, compared = 0
        func compare(_ a: Double, _ b: Double) { worst = max(worst, Self.close(a, b)); compared += 1 }
        for (i, n) in Self.manifest.neurons.enumerated() {
            let r = try #require(ref.individual["\(n)"])
            for metric in ["loss_effect_median", "loss_effect_q25", "loss_effect_q75", "loss_effect_mean", "entropy_effect_median",
                           "entropy_effect_q25", "entropy_effect_q75", "entropy_effect_mean", "delta_loss", "delta_entropy", "loss", "entropy"] {
                compare(try Self.summary(s, N.scopeNeurons, "N\(n)", metric), try #require(r[metric]))
            }
            compare(try Self.summary(s, N.scopeNeurons, "N\(n)", N.meanActivation), ref.mean_activation[i])
            #expect(try Self.summary(s, N.scopeNeurons, "N\(n)", "rank") == Double(i + 1))
        }
        for c in ref.cumulative {
            compare(try Self.summary(s, N.scopeCumulative, "k\(c.k)", N.loss), c.loss_mean)
            compare(try Self.summary(s, N.scopeCumulative, "k\(c.k)", N.lossSD), c.loss_sd)
            compare(try Self.summary(s, N.scopeCumulative, "k\(c.k)", N.entropy), c.entropy_mean)
            compare(try Self.summary(s, N.scopeCumulative, "k\(c.k)", N.entropySD), c.entropy_sd)
        }
        #expect(try Self.summary(s, N.scopeSVD, "W_U", "tokens") == Double(ref.tokens))
        print("\(name) ablations: \(compared) values, max |diff| against ablate_all_models.py / cumulative_ablation.py \(worst)")
        #expect(compared == 13 * Self.manifest.neurons.count + 4 * ref.cumulative.count)
        #expect(worst < 1e-4)
    }

    /// The tail pass with no intervention gives the whole pass's logits.
    @Test func tailFromResidMidIsTheWholePass() throws {
        let (model, _) = try Self.model("tiny-ln")
        let tokens = Array(Self.manifest.windows.prefix(2))
        let L = model.config.nLayers
        let whole = try model.run(tokens, ForwardOptions(cache: [HookName(.residMid, layer: L - 1)], logits: .all))
        let tail = try model.runFromResidMid(tokens, layer: L - 1, residMid: whole.cache[HookName(.residMid, layer: L - 1)]!.data,
                                             ForwardOptions(logits: .all))
        let n = tokens.count * tokens[0].count * model.config.dVocab
        #expect(Array(UnsafeBufferPointer(start: tail.logits, count: n)) == Array(UnsafeBufferPointer(start: whole.logits, count: n)))
        #expect(throws: GPT2Error.self) {
            _ = try model.runFromResidMid(tokens, layer: L - 1, residMid: whole.cache[HookName(.residMid, layer: L - 1)]!.data,
                                          ForwardOptions(cache: [HookName(.pattern, layer: L - 1)]))
        }
    }

    /// `RankOneLogits` (the logits from resid_post, then two neurons set to a value together as a
    /// rank-one change) equals the tail pass with that intervention, LN and LN-free.
    @Test(arguments: ["tiny-ln", "tiny-lnfree"]) func rankOneIsTheTailPass(name: String) throws {
        let (model, _) = try Self.model(name)
        let tokens = Array(Self.manifest.windows.prefix(2)), cfg = model.config, L = cfg.nLayers
        let (V, C, M, N) = (cfg.dVocab, cfg.dModel, cfg.dMLP, tokens.count * tokens[0].count)
        let (mid, post, resid) = (HookName(.residMid, layer: L - 1), HookName(.mlpPost, layer: L - 1), HookName(.residPost, layer: L - 1))
        let whole = try model.run(tokens, ForwardOptions(cache: [mid, post, resid], logits: .all))
        let neurons = [1, M - 2], values: [Float] = [0.7, -0.3]
        let set = Intervention(post, .custom { t in
            for row in stride(from: 0, to: t.data.count, by: M) { for (n, v) in zip(neurons, values) { t.data[row + n] = v } }
        })
        let tail = try model.runFromResidMid(tokens, layer: L - 1, residMid: whole.cache[mid]!.data,
                                             ForwardOptions(interventions: [set], logits: .all))
        let rankOne = RankOneLogits(model: model, neurons: neurons), x = whole.cache[resid]!.data, acts = whole.cache[post]!.data
        var z = [Float](repeating: 0, count: N * V), sigma = [Float](repeating: 0, count: N), out = [Float](repeating: 0, count: V)
        rankOne.logits(x: x, N: N, into: &z, sigma: &sigma)
        var worstPlain: Float = 0, worstAblated: Float = 0
        for r in 0..<N {
            for v in 0..<V { worstPlain = max(worstPlain, abs(z[r * V + v] - whole.logits[r * V + v])) }
            let deltas = neurons.indices.map { (index: $0, c: Double(values[$0] - acts[r * M + neurons[$0]])) }
            z.withUnsafeBufferPointer { zp in x.withUnsafeBufferPointer { xp in
                rankOne.ablate(z: zp.baseAddress! + r * V, x: xp.baseAddress! + r * C, sigma: sigma[r], deltas: deltas, out: &out)
            } }
            for v in 0..<V { worstAblated = max(worstAblated, abs(out[v] - tail.logits[r * V + v])) }
        }
        print("\(name) rank-one logits: max |diff| from resid_post \(worstPlain), ablated against the tail pass \(worstAblated)")
        #expect(worstPlain < 1e-4 && worstAblated < 1e-4)
    }

    /// Shards of the ablations merged equal the unsharded run.
    @Test func shardsMergeToTheWholeRun() throws {
        let whole = try ResultsDatabase.inMemory()
        let id = try Self.run("tiny-ln", db: whole)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("neurons-shards-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var paths: [String] = []
        for i in 0..<3 {
            let path = dir.appendingPathComponent("shard\(i).sqlite").path
            _ = try Self.run("tiny-ln", db: try ResultsDatabase(path: path), shard: try Shard(parsing: "\(i)/3"))
            paths.append(path)
        }
        let out = dir.appendingPathComponent("merged.sqlite").path
        let merged = try MergeJob(outputPath: out, shardPaths: paths).run()
        let db = try ResultsDatabase(path: out)
        let runID = try #require(merged.first?.outcome.runID)
        let a = try whole.summaries(runID: id).filter { $0.scope != StoreName.scopeCheck }
        let b = try db.summaries(runID: runID).filter { $0.scope != StoreName.scopeCheck }
        #expect(a.count == b.count && a.count > 0)
        for (x, y) in zip(a, b) { #expect(x.scope == y.scope && x.key == y.key && x.metric == y.metric && x.value == y.value) }
    }
}

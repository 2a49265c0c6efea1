import Foundation
import GPT2
import TensorCore
import Testing
@testable import Training

/// Training dropout against transformers (Tests/Fixtures/reference/training/dropout.*, made by
/// `scripts/reference/make_dropout_fixtures.py`): the masks bit for bit, four optimizer steps of
/// tiny-ln with dropout at GPT-2's three sites as a float64 GPT2LMHeadModel in train mode takes
/// them with the same masks; p = 0 changes nothing; a resumed run draws the same masks.
@Suite struct DropoutReferenceTests {
    struct Manifest: Decodable {
        struct Settings: Decodable {
            let seed: UInt64
            let steps: Int
            let seq_len: Int
            let micro_batch: Int
            let rates: [String: Double]
            let lr: Double
            let min_lr: Double
            let warmup: Int
            let weight_decay: Double
            let max_grad_norm: Double
        }
        struct Sample: Decodable {
            let site_code: UInt64
            let layer: Int
            let step: Int
            let micro_batch: Int
            let p: Double
            let key: String
            let threshold: UInt64
            let first_64_kept: String
            let kept_of_4096: Int
        }
        let settings: Settings
        let tokens: [[[Int]]]
        let lr_used: [Double]
        let loss: [Double]
        let grad_norm_before_clipping: [Double]
        let parameter_names: [String]
        let wte_row_ids: [Int]
        let mask_samples: [Sample]
    }

    static let manifest = try! JSONDecoder().decode(Manifest.self, from: Data(contentsOf: Fixtures.reference("training/dropout.json")))
    static var rates: DropoutRates {
        let r = manifest.settings.rates
        return DropoutRates(embd: r["embd_pdrop"]!, attn: r["attn_pdrop"]!, resid: r["resid_pdrop"]!)
    }

    static func values(_ params: ModelParameters, _ name: String) -> [Float] {
        let e = params.table.entry(name)!
        return Array(UnsafeBufferPointer(start: params.arena.base + e.offset, count: e.count))
    }

    /// The largest |got − want| over the values, and over the values the largest |want|.
    static func worst(_ got: [Float], _ want: [Float], skip: (Int) -> Bool = { _ in false }) -> (diff: Double, scale: Double) {
        #expect(got.count == want.count)
        var diff = 0.0, scale = 0.0
        for i in 0..<min(got.count, want.count) where !skip(i) {
            diff = max(diff, abs(Double(got[i]) - Double(want[i])))
            scale = max(scale, abs(Double(want[i])))
        }
        return (diff, scale)
    }

    /// Each sample's key, threshold and keep bits are the Python implementation's, and `apply`
    /// keeps exactly the elements `keeps` says (at an offset, as a chunk of a larger tensor).
    @Test func masksAreThePythonOnesBitForBit() throws {
        for s in Self.manifest.mask_samples {
            let site = try #require(DropoutSite(rawValue: s.site_code))
            let rates = DropoutRates(embd: s.p, attn: s.p, resid: s.p)
            let d = Dropout(rates: rates, seed: Self.manifest.settings.seed, step: s.step, microBatch: s.micro_batch)
            let mask = try #require(d.mask(site, layer: s.layer))
            #expect(String(mask.key) == s.key && mask.threshold == s.threshold, "\(site) key \(mask.key) vs \(s.key)")
            let bits = String((0..<64).map { mask.keeps($0) ? "1" : "0" })
            #expect(bits == s.first_64_kept, "\(site): \(bits) vs \(s.first_64_kept)")
            #expect((0..<4096).filter(mask.keeps).count == s.kept_of_4096)
            let ones = [Float](repeating: 1, count: 4096)
            var out = [Float](repeating: 7, count: 4000)
            ones.withUnsafeBufferPointer { i in out.withUnsafeMutableBufferPointer { mask.apply(out: $0.baseAddress!, inp: i.baseAddress!, n: 4000, offset: 96) } }
            #expect(out.enumerated().allSatisfy { $0.element == (mask.keeps($0.offset + 96) ? mask.scale : 0) })
        }
        #expect(Dropout(rates: .none, seed: 1, step: 0, microBatch: 0).mask(.attention, layer: 0) == nil)
    }

    func trainer(_ model: GPT2Model, rates: DropoutRates) throws -> Trainer {
        let c = Self.manifest.settings, tokens = Self.manifest.tokens
        var adam = AdamWSettings()
        adam.weightDecay = c.weight_decay
        var settings = TrainingSettings(seqLen: c.seq_len, sequencesPerStep: tokens[0].count, microBatch: c.micro_batch, steps: c.steps,
                                        seed: c.seed, learningRate: LearningRateSchedule(peak: c.lr, floor: c.min_lr, warmupSteps: c.warmup,
                                                                                         totalSteps: c.steps),
                                        adamW: adam, maxGradNorm: c.max_grad_norm)
        settings.dropout = rates
        let corpus = TokenCorpus(path: "dropout", tokens: tokens.flatMap { $0.flatMap { $0.map(Int32.init) } }, documents: 1)
        let t = try Trainer(model: model, corpus: corpus, settings: settings, layerNorms: nil)
        t.batchOverride = { tokens[$0] }
        return t
    }

    /// Four optimizer steps with dropout 0.1 / 0.2 / 0.15 (embeddings, pattern, outputs): the
    /// learning rates, losses, gradient norms, the first step's gradients and the parameters after
    /// every step match transformers' float64 run with the same masks.
    @Test func fourStepsWithDropoutMatchTransformers() throws {
        let ref = try SafetensorsFile(url: Fixtures.reference("training/dropout.safetensors"))
        let m = Self.manifest
        let model = try Fixtures.tinyModel()
        let C = model.config.dModel
        let t = try trainer(model, rates: Self.rates)
        func wteRows(_ p: FloatPointer) -> [Float] { m.wte_row_ids.flatMap { r in (0..<C).map { p[r * C + $0] } } }

        let (loss0, _, _) = try t.accumulateGradients(step: 0)
        #expect(abs(loss0 - m.loss[0]) <= 1e-5 * m.loss[0], "step 1 loss \(loss0) vs \(m.loss[0])")
        var worstGradient = 0.0
        for name in m.parameter_names {
            let got = name == "wte.weight" ? wteRows(t.gradients.wE) : Self.values(t.gradients, name)
            let w = Self.worst(got, try ref.floats(name == "wte.weight" ? "grad1.wte.weight.rows" : "grad1.\(name)"))
            #expect(w.diff <= 1e-4 * max(w.scale, 1e-6), "grad1.\(name): \(w.diff) of \(w.scale)")
            worstGradient = max(worstGradient, w.diff / max(w.scale, 1e-6))
        }
        var worstLoss = 0.0, worstParameter = 0.0, worstOfScale = 0.0
        for s in 0..<m.settings.steps {
            let r = try t.runStep()
            #expect(abs(r.learningRate - m.lr_used[s]) <= 1e-12)
            worstLoss = max(worstLoss, abs(r.loss - m.loss[s]) / m.loss[s])
            #expect(abs(r.loss - m.loss[s]) <= 1e-5 * m.loss[s], "step \(s + 1) loss \(r.loss) vs \(m.loss[s])")
            let norm = m.grad_norm_before_clipping[s]
            #expect(abs(r.gradNorm - norm) <= 1e-5 * norm, "step \(s + 1) gradient norm \(r.gradNorm) vs \(norm)")
            for name in m.parameter_names {
                // The key bias's true gradient is 0: its float noise becomes Adam steps (see TrainingReferenceTests).
                let keyBias: (Int) -> Bool = name.hasSuffix("c_attn.bias") ? { (C..<2 * C).contains($0) } : { _ in false }
                let got = name == "wte.weight" ? wteRows(model.parameters.wE) : Self.values(model.parameters, name)
                let key = name == "wte.weight" ? "after\(s + 1).wte.weight.rows" : "after\(s + 1).\(name)"
                let w = Self.worst(got, try ref.floats(key), skip: keyBias)
                #expect(w.diff <= 1e-5 * max(w.scale, 1), "after\(s + 1).\(name): \(w.diff) of \(w.scale)")
                worstParameter = max(worstParameter, w.diff / max(w.scale, 1))
                worstOfScale = max(worstOfScale, w.diff / w.scale)
            }
        }
        print("dropout vs transformers: loss max rel \(worstLoss), grad1 max \(worstGradient) of each tensor's max, "
              + "parameters max \(worstParameter) of max(1, each tensor's max), \(worstOfScale) of each tensor's max")
    }

    /// Rates of 0 (given explicitly) train to the very bits of settings without dropout, store
    /// nothing in the settings' JSON, and a forward with an all-zero `Dropout` is the plain one.
    @Test func zeroDropoutIsBitIdentical() throws {
        var bits: [[UInt32]] = [], losses: [[Double]] = []
        for rates in [DropoutRates.none, DropoutRates(embd: 0, attn: 0, resid: 0)] {
            let t = try trainer(try Fixtures.tinyModel(), rates: rates)
            losses.append(try (0..<2).map { _ in try t.runStep().loss })
            bits.append(parameterBits(t.model))
            let json = String(decoding: try JSONEncoder().encode(t.settings), as: UTF8.self)
            #expect(!json.contains("dropout"), "\(json)")
        }
        #expect(bits[0] == bits[1] && losses[0] == losses[1])
        let withDropout = try trainer(try Fixtures.tinyModel(), rates: Self.rates)
        #expect(try withDropout.runStep().loss != losses[0][0])
        let settings = try JSONDecoder().decode(TrainingSettings.self, from: try JSONEncoder().encode(withDropout.settings))
        #expect(settings == withDropout.settings && settings.dropout == Self.rates)

        let model = try Fixtures.tinyModel(), tokens = Self.manifest.tokens[0]
        var zero = ForwardOptions(logits: .all, retainForBackward: true)
        zero.dropout = Dropout(rates: .none, seed: 1, step: 0, microBatch: 0)
        let a = try model.run(tokens, ForwardOptions(logits: .all, retainForBackward: true)), b = try model.run(tokens, zero)
        let n = a.N * model.config.dVocab
        #expect((0..<n).allSatisfy { a.logits[$0].bitPattern == b.logits[$0].bitPattern })
    }

    /// Removing LayerNorm with dropout, a checkpoint after step 4 restored into a fresh trainer
    /// continues to the bits of an uninterrupted run: the masks depend on the step, not on state.
    @Test func resumeWithDropoutIsBitIdentical() throws {
        let corpus = try Fixtures.heldout()
        let schedule = RemovalSchedule(nLayers: 2, ln2Start: 1, ln2Gap: 1, ln1QKGap: 1, ln1VGap: 1)
        func trainer() throws -> Trainer {
            var s = TrainingSettings(seqLen: 16, sequencesPerStep: 4, microBatch: 2, steps: 9, seed: 3,
                                     learningRate: LearningRateSchedule(peak: 1e-2, floor: 5e-3, warmupSteps: 1, totalSteps: 9),
                                     auxWeight: 0.1)
            s.dropout = DropoutRates(embd: 0.1, attn: 0.1, resid: 0.1)
            return try Trainer(model: try Fixtures.tinyModel(), corpus: corpus, settings: s, layerNorms: FakeLayerNorms(schedule: schedule))
        }
        let straight = try trainer()
        let straightLosses = try (0..<9).map { _ in try straight.runStep().loss }
        let folder = try temporaryFolder("dropout-resume")
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = try trainer()
        for _ in 0..<4 { try first.runStep() }
        try TrainingCheckpoint.save(first, out: folder, runID: 7, corpusHash: corpus.hash, seconds: 1)
        let latest = try #require(TrainingCheckpoint.latest(out: folder))
        let state = try TrainingCheckpoint.read(latest)
        #expect(state.settings.dropout == first.settings.dropout)
        let second = try trainer()
        try state.restore(into: second, from: latest)
        let rest = try (4..<9).map { _ in try second.runStep().loss }
        #expect(parameterBits(second.model) == parameterBits(straight.model))
        #expect(rest == Array(straightLosses[4...]))
    }
}

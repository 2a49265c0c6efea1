import Foundation
import GPT2
import Testing
@testable import Training

@Suite struct RemovalScheduleTests {
    /// The paper's GPT-2 small schedule (config.py, make_gpt2_standard): ln_2 at 20 + 2i, ln_1 Q/K
    /// at 44 + 2i, ln_1 V at 68 + 3i, ln_f at 104, 300 steps.
    @Test func gpt2SmallNumbers() {
        let s = RemovalSchedule(nLayers: 12)
        #expect(s.ln1QKStart == 44 && s.ln1VStart == 68 && s.lnFinalStep == 104)
        let events = s.events
        #expect(events.count == 37)
        #expect(events.first! == (20, .ln2(block: 0)))
        #expect(events.filter { if case .ln1V = $0.path { true } else { false } }.map(\.step) == (0..<12).map { 68 + 3 * $0 })
        #expect(events.last! == (104, .lnFinal))
        #expect(zip(events, events.dropFirst()).allSatisfy { $0.step <= $1.step })
    }

    @Test func removedFromItsStepOn() {
        let s = RemovalSchedule(nLayers: 4)
        #expect(!s.isRemoved(.ln2(block: 1), at: 21))
        #expect(s.isRemoved(.ln2(block: 1), at: 22))
        #expect(s.isRemoved(.lnFinal, at: s.lnFinalStep) && !s.isRemoved(.lnFinal, at: s.lnFinalStep - 1))
    }

    @Test func gapZeroRemovesAllBlocksAtOnce() {
        let s = RemovalSchedule(nLayers: 3, ln2Start: 5, ln2Gap: 0)
        #expect(s.events.filter { if case .ln2 = $0.path { true } else { false } }.map(\.step) == [5, 5, 5])
    }
}

@Suite struct FakeLayerNormTests {
    @Test func sigmaFreezesWhenRemoved() {
        var ln = FakeLayerNorms(schedule: RemovalSchedule(nLayers: 1, ln2Start: 1, ln2Gap: 1, ln1QKStart: 2, ln1QKGap: 1,
                                                          ln1VStart: 3, ln1VGap: 1, lnFinalStep: 4))
        var m = MeasuredSigmas(nLayers: 1)
        m.ln1 = [2]; m.ln2 = [3]; m.lnFinal = 4
        ln.update(measured: m, step: 0)
        #expect(ln.ln2Sigma[0] == 3 && ln.ln1Sigma[0] == 2)
        m.ln1 = [12]; m.ln2 = [13]; m.lnFinal = 14
        ln.update(measured: m, step: 1)  // ln_2 is fake from step 1: frozen
        #expect(ln.ln2Sigma[0] == 3)
        #expect(abs(ln.ln1Sigma[0]! - (0.9 * 2 + 0.1 * 12)) < 1e-12)
        ln.update(measured: m, step: 2)  // ln_1 Q/K fake, V real: still tracked
        #expect(abs(ln.ln1Sigma[0]! - (0.9 * 3 + 0.1 * 12)) < 1e-12)
        let before = ln.ln1Sigma[0]
        ln.update(measured: m, step: 3)  // both paths fake
        #expect(ln.ln1Sigma[0] == before)
        let plan = ln.plan(at: 2, eps: 1e-5)
        #expect(plan.blocks[0].ln1 == .fixed(Float(ln.ln1Sigma[0]!)) && plan.blocks[0].ln1V == .standard(eps: 1e-5))
        #expect(plan.blocks[0].ln2 == .fixed(3) && plan.final == .standard(eps: 1e-5))
    }

    /// `.microBatch`: momentum^(sequences / momentumSequences) per forward; ln_1 (three calls per
    /// forward in the companion) moves by its cube while either path is real; frozen once fake.
    @Test func microBatchUpdatesAsTheCompanionsCalls() {
        var ln = FakeLayerNorms(schedule: RemovalSchedule(nLayers: 1, ln2Start: 1, ln2Gap: 1, ln1QKStart: 2, ln1QKGap: 1,
                                                          ln1VStart: 3, ln1VGap: 1, lnFinalStep: 4), momentum: 0.9,
                                sigmaUpdate: .microBatch, momentumSequences: 32)
        (ln.ln1Sigma[0], ln.ln2Sigma[0], ln.lnFinalSigma) = (1, 1, 1)
        var m = MeasuredSigmas(nLayers: 1)
        m.ln1 = [2]; m.ln2 = [3]; m.lnFinal = 4
        ln.update(microBatch: m, sequences: 16, step: 0)
        let k = pow(0.9, 0.5)  // 16 of the momentum's 32 sequences
        #expect(abs(ln.ln2Sigma[0]! - (k + (1 - k) * 3)) < 1e-12 && abs(ln.lnFinalSigma! - (k + (1 - k) * 4)) < 1e-12)
        #expect(abs(ln.ln1Sigma[0]! - (k * k * k + (1 - k * k * k) * 2)) < 1e-12, "ln_1: three calls")
        let (ln2, ln1) = (ln.ln2Sigma[0], ln.ln1Sigma[0]!)
        ln.update(microBatch: m, sequences: 32, step: 2)  // ln_2 fake (frozen); ln_1 Q/K fake, V real: still moves
        #expect(ln.ln2Sigma[0] == ln2 && abs(ln.ln1Sigma[0]! - (0.729 * ln1 + 0.271 * 2)) < 1e-12)
        let before = ln.ln1Sigma[0]
        ln.update(microBatch: m, sequences: 32, step: 3)  // both paths of ln_1 fake
        #expect(ln.ln1Sigma[0] == before)
    }

    /// A checkpoint written before `sigmaUpdate` existed resumes with the per-step update it used.
    @Test func oldCheckpointStateUpdatesPerStep() throws {
        var ln = FakeLayerNorms(schedule: RemovalSchedule(nLayers: 2), sigmaUpdate: .step)
        ln.ln1Sigma = [1.5, 2]
        var object = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(ln)) as? [String: Any])
        #expect(object["sigmaUpdate"] as? String == "step")
        object["sigmaUpdate"] = nil
        object["momentumSequences"] = nil
        let old = try JSONDecoder().decode(FakeLayerNorms.self, from: JSONSerialization.data(withJSONObject: object))
        #expect(old.sigmaUpdate == .step && old.ln1Sigma == [1.5, 2] && old.schedule == ln.schedule)
        let current = TrainingSettings(seqLen: 16, sequencesPerStep: 4, microBatch: 2, steps: 2, seed: 3,
                                       learningRate: LearningRateSchedule(peak: 1e-2, floor: 5e-3, warmupSteps: 1, totalSteps: 2))
        var settings = try JSONSerialization.jsonObject(with: JSONEncoder().encode(current)) as! [String: Any]
        settings["maskEOTTargets"] = nil
        settings["auxTargetSkipsBOSAndEOT"] = nil
        var adam = settings["adamW"] as! [String: Any]
        adam["decayLayerNormWeights"] = nil
        settings["adamW"] = adam
        let s = try JSONDecoder().decode(TrainingSettings.self, from: JSONSerialization.data(withJSONObject: settings))
        #expect(!s.maskEOTTargets && !s.auxTargetSkipsBOSAndEOT && !s.adamW.decayLayerNormWeights && s == current)
    }

    @Test func keepLNRemovesNothing() {
        let ln = FakeLayerNorms(schedule: RemovalSchedule(nLayers: 2), keepLN: true)
        #expect(ln.removals(at: 20).isEmpty)
        #expect(ln.plan(at: 1000, eps: 1e-5) == LayerNormPlan(uniform: .standard(eps: 1e-5), nLayers: 2, rawEps: 1e-5))
    }
}

@Suite struct CorpusTests {
    @Test func documentsSplitOnSeparatorLines() {
        let text = "\nFirst doc.\nline two\n\n<|endoftext|>\n\n<|endoftext|>\nSecond <|endoftext|> inline\r\n<|endoftext|>\n"
        #expect(TokenCorpus.split(text) == ["First doc.\nline two", "Second <|endoftext|> inline"])
    }

    @Test func everyDocumentEndsWithEndOfText() throws {
        let tok = try Fixtures.tokenizer()
        let folder = try temporaryFolder("corpus")
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("c.txt")
        try "Hello world.\n<|endoftext|>\nThe cat.\n".write(to: file, atomically: true, encoding: .utf8)
        let c = try TokenCorpus.load(file, tokenizer: tok, eot: 50256)
        #expect(c.tokens(0..<c.tokenCount) == tok.encode("Hello world.") + [50256] + tok.encode("The cat.") + [50256])
        #expect(c.documents == 2)
    }

    @Test func emptyCorpusIsRefused() throws {
        let folder = try temporaryFolder("corpus")
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("empty.txt")
        try "\n<|endoftext|>\n  \n".write(to: file, atomically: true, encoding: .utf8)
        #expect(throws: TrainingError.corpusEmpty(file: file.path)) { try TokenCorpus.load(file, tokenizer: try Fixtures.tokenizer(), eot: 50256) }
    }

    @Test func eachEpochVisitsEveryBlockOnce() {
        var order = BlockOrder(blocks: 37, seed: 5)
        let epoch0 = (0..<37).map { order.block(at: $0) }, epoch1 = (37..<74).map { order.block(at: $0) }
        #expect(epoch0.sorted() == Array(0..<37) && epoch1.sorted() == Array(0..<37) && epoch0 != epoch1)
        var again = BlockOrder(blocks: 37, seed: 5)
        #expect((0..<37).map { again.block(at: 36 - $0) } == epoch0.reversed())
    }
}

@Suite struct InitConfigTests {
    func write(_ json: String) throws -> (URL, URL) {
        let folder = try temporaryFolder("init")
        let file = folder.appendingPathComponent("config.json")
        try json.write(to: file, atomically: true, encoding: .utf8)
        return (folder, file)
    }

    @Test func unknownKeyIsNamedWithAGuess() throws {
        let (folder, file) = try write(#"{"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 32, "vocab_size": 50257, "n_embed": 64}"#)
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect {
            try InitConfig.load(file)
        } throws: { e in
            let m = (e as? LocalizedError)?.errorDescription ?? ""
            return m.contains(file.path) && m.contains("\"n_embed\"") && m.contains("did you mean \"n_embd\"")
        }
    }

    @Test func lnFreeConfigIsRefused() throws {
        let (folder, file) = try write(#"{"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 32, "vocab_size": 50257, "layer_norm_epsilon": 1e12}"#)
        defer { try? FileManager.default.removeItem(at: folder) }
        #expect(throws: TrainingError.self) { try InitConfig.load(file) }
    }

    @Test func initialisationFollowsTransformers() throws {
        let (folder, file) = try write(#"{"n_embd": 64, "n_layer": 8, "n_head": 4, "n_positions": 64, "vocab_size": 50257}"#)
        defer { try? FileManager.default.removeItem(at: folder) }
        let (config, range) = try InitConfig.load(file)
        let m = try Initialization.gpt2(config: config, seed: 1, std: range)
        func std(_ name: String) -> Double {
            let v = m.parameters.tensor(name)!.data.map(Double.init)
            let mean = v.reduce(0, +) / Double(v.count)
            return (v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(v.count)).squareRoot()
        }
        #expect(abs(std("wte.weight") - 0.02) < 0.0005)
        #expect(abs(std("h.3.mlp.c_proj.weight") - 0.02 / 4) < 0.0005)
        #expect(m.parameters.tensor("h.0.ln_1.weight")!.data.allSatisfy { $0 == 1 })
        #expect(m.parameters.tensor("h.0.attn.c_attn.bias")!.data.allSatisfy { $0 == 0 })
        #expect(parameterBits(try Initialization.gpt2(config: config, seed: 1)) == parameterBits(m))
    }
}

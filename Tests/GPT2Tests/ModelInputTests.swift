import Foundation
import GPT2
import TensorCore
import Testing

/// Bad token input and hook patterns give one clear error, never a crash.
@Suite struct ModelInputTests {
    static func model() throws -> GPT2Model {
        try GPT2Model(checkpoint: try Checkpoint.open(Fixtures.model("tiny-ln").path))
    }

    @Test func emptyPrompt() throws {
        let gpt = try Self.model()
        #expect(throws: GPT2Error.emptyPrompt) { try gpt.forward([[]]) }
        #expect(throws: GPT2Error.emptyPrompt) { try gpt.forward([]) }
        #expect(GPT2Error.emptyPrompt.errorDescription!.contains("empty"))
    }

    @Test func promptLongerThanContext() throws {
        let gpt = try Self.model()
        let n = gpt.config.nCtx + 1
        #expect(throws: GPT2Error.promptTooLong(tokens: n, nCtx: gpt.config.nCtx)) {
            try gpt.forward([[Int](repeating: 262, count: n)])
        }
        let message = GPT2Error.promptTooLong(tokens: n, nCtx: 32).errorDescription!
        #expect(message.contains("\(n) tokens") && message.contains("n_positions") && !message.contains("\n"))
    }

    @Test func tokenOutsideVocabularyAndUnequalBatch() throws {
        let gpt = try Self.model()
        #expect(throws: GPT2Error.tokenOutOfRange(id: 50257, dVocab: 50257)) { try gpt.forward([[1, 50257]]) }
        #expect(throws: GPT2Error.unequalLengths(first: 2, other: 3, index: 1)) { try gpt.forward([[1, 2], [1, 2, 3]]) }
    }

    @Test func hookPatterns() throws {
        #expect(try HookPattern.resolve(["blocks.*.hook_resid_pre"], nLayers: 2)
                == [HookName(.residPre, layer: 0), HookName(.residPre, layer: 1)])
        #expect(try HookPattern.resolve(["all"], nLayers: 2).count == HookName.all(nLayers: 2).count)
        #expect(try HookPattern.resolve(["pattern.1", "ln_final.scale"], nLayers: 2)
                == [HookName(.pattern, layer: 1), HookName(.lnFinalScale)])
        #expect(throws: GPT2Error.unknownPattern("blocks.*.hook_nonsense")) {
            try HookPattern.resolve(["blocks.*.hook_nonsense"], nLayers: 2)
        }
        #expect(throws: GPT2Error.layerOutOfRange("blocks.5.hook_resid_pre", nLayers: 2)) {
            try HookPattern.resolve(["blocks.5.hook_resid_pre"], nLayers: 2)
        }
        // Names print back exactly as TransformerLens spells them.
        for name in HookName.all(nLayers: 3) { #expect(HookName(parsing: name.description) == name) }
    }

    /// The cache holds only the hooks asked for.
    @Test func cacheHoldsOnlyRequestedHooks() throws {
        let gpt = try Self.model()
        let wanted: Set<HookName> = [HookName(.pattern, layer: 1), HookName(.embed)]
        let out = try gpt.forward([[464, 3797, 3332]], cache: wanted, logits: .last)
        #expect(Set(out.cache.keys) == wanted)
        #expect(out.cache[HookName(.pattern, layer: 1)]?.shape == [1, 4, 3, 3])
        #expect(out.logits.shape == [1, 1, gpt.config.dVocab])
    }
}

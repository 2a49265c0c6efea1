import Foundation
import GPT2
import TensorCore
import Testing

/// Every hook and the logits against TransformerLens 2.16.1 (and transformers, unprocessed),
/// tensor by tensor, as recorded by scripts/reference/make_models_and_fixtures.py.
@Suite struct ParityTests {
    static let cases: [(model: String, mode: String)] = [
        ("tiny-ln", "processed"), ("tiny-ln", "unprocessed"),
        ("tiny-lnfree", "processed"), ("tiny-lnfree", "unprocessed"),
    ]

    @Test(arguments: cases)
    func hooksAndLogitsMatchTransformerLens(model: String, mode: String) throws {
        let checkpoint = try Checkpoint.open(Fixtures.model(model).path)
        let gpt = try GPT2Model(checkpoint: checkpoint, processing: mode == "processed" ? .all : .none)
        let everyHook = Set(HookName.all(nLayers: gpt.config.nLayers))
        for batch in try Fixtures.manifest().batches {
            let ref = try SafetensorsFile(url: Fixtures.reference("\(model).\(mode).\(batch.name).safetensors"))
            let out = try gpt.forward(batch.tokens, cache: everyHook, logits: .all)
            var compared = 0
            for hook in everyHook.sorted() {
                let name = hook.description
                guard ref.entries[name] != nil else { continue }
                let expected = try ref.tensor(name)
                let got = try #require(out.cache[hook], "\(name) not cached")
                #expect(got.shape == expected.shape, "\(model) \(mode) \(batch.name) \(name) shape")
                let diff = got.maxAbsDifference(expected), tol = tolerance(for: expected)
                print("\(model) \(mode) \(batch.name) \(name): max |diff| \(diff) (tol \(tol))")
                #expect(diff <= tol, "\(model) \(mode) \(batch.name) \(name): max |diff| \(diff) > \(tol)")
                compared += 1
            }
            #expect(compared == everyHook.count, "fixture holds \(compared) of \(everyHook.count) hooks")

            let (B, T, V) = (batch.tokens.count, batch.tokens[0].count, gpt.config.dVocab)
            var last = [Float](), head = [Float]()
            for b in 0..<B {
                last += out.logits.data[((b * T) + T - 1) * V ..< ((b * T) + T) * V]
                for t in 0..<T { head += out.logits.data[(b * T + t) * V ..< (b * T + t) * V + 512] }
            }
            for prefix in mode == "unprocessed" ? ["", "hf."] : [""] {
                let l = try ref.tensor(prefix + "logits_last"), h = try ref.tensor(prefix + "logits_head")
                let dl = Tensor(shape: [B, V], data: last).maxAbsDifference(l)
                let dh = Tensor(shape: [B, T, 512], data: head).maxAbsDifference(h)
                print("\(model) \(mode) \(batch.name) \(prefix)logits: max |diff| last \(dl), head \(dh)")
                #expect(dl <= 1e-4 && dh <= 1e-4, "\(prefix)logits differ: last \(dl), head \(dh)")
            }
        }
    }
}

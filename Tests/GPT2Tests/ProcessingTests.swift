import Foundation
import GPT2
import TensorCore
import Testing

/// Weight processing (fold_ln, center_writing_weights, center_unembed, fold_value_biases) against
/// TransformerLens's processed state dict, matrix by matrix (relative tolerance 1e-5: the LN-free
/// model's folded weights reach ~1e6).
@Suite struct ProcessingTests {
    @Test(arguments: ["tiny-ln", "tiny-lnfree"])
    func processedWeightsMatchTransformerLens(model: String) throws {
        let ref = try SafetensorsFile(url: Fixtures.reference("\(model).processed.weights.safetensors"))
        let gpt = try GPT2Model(checkpoint: try Checkpoint.open(Fixtures.model(model).path), processing: .all)
        let cfg = gpt.config, w = gpt.parameters
        let C = cfg.dModel, NH = cfg.nHeads, dh = cfg.dHead, M = cfg.dMLP
        var compared = 0
        func check(_ name: String, _ got: [Float], _ shape: [Int]) throws {
            let expected = try ref.tensor(name)
            #expect(expected.shape == shape, "\(name) shape \(expected.shape)")
            let scale = max(1, finiteMaxAbs(expected))
            let diff = Tensor(shape: shape, data: got).maxAbsDifference(expected)
            print("\(model) \(name): max |diff| \(diff) (scale \(scale))")
            #expect(diff <= 1e-5 * scale, "\(model) \(name): max |diff| \(diff)")
            compared += 1
        }
        // TransformerLens's per-head layouts, gathered from the fused GPT-2 layout.
        func perHead(_ fused: [Float], part: Int) -> [Float] {  // W_Q/K/V [h, d, dh]
            var out = [Float](); out.reserveCapacity(NH * C * dh)
            for h in 0..<NH { for d in 0..<C { for e in 0..<dh { out.append(fused[d * 3 * C + part * C + h * dh + e]) } } }
            return out
        }
        func values(_ p: FloatPointer, _ n: Int) -> [Float] { Array(UnsafeBufferPointer(start: p, count: n)) }
        for l in 0..<cfg.nLayers {
            let b = w.blocks[l], p = "blocks.\(l)."
            let wQKV = values(b.wQKV, C * 3 * C), bQKV = values(b.bQKV, 3 * C)
            for (i, name) in ["W_Q", "W_K", "W_V"].enumerated() {
                try check(p + "attn." + name, perHead(wQKV, part: i), [NH, C, dh])
                try check(p + "attn.b_" + name.dropFirst(2), Array(bQKV[(i * C)..<((i + 1) * C)]), [NH, dh])
            }
            try check(p + "attn.W_O", values(b.wO, C * C), [NH, dh, C])
            try check(p + "attn.b_O", values(b.bO, C), [C])
            try check(p + "mlp.W_in", values(b.wIn, C * M), [C, M])
            try check(p + "mlp.b_in", values(b.bIn, M), [M])
            try check(p + "mlp.W_out", values(b.wOut, M * C), [M, C])
            try check(p + "mlp.b_out", values(b.bOut, C), [C])
        }
        #expect(gpt.lnFolded, "LayerNorm weights must be folded away")
        try check("pos_embed.W_pos", values(w.wPos, cfg.nCtx * C), [cfg.nCtx, C])
        try check("embed.W_E.head", values(w.wE, 512 * C), [512, C])
        var wUHead = [Float]()  // W_U[:, 0..<512] from our (V, C) layout
        for d in 0..<C { for v in 0..<512 { wUHead.append(w.wU[v * C + d]) } }
        try check("unembed.W_U.head", wUHead, [C, 512])
        try check("unembed.b_U", values(w.bU, cfg.dVocab), [cfg.dVocab])
        #expect(compared == cfg.nLayers * 12 + 4)
    }

    /// Without processing the weights are the checkpoint's, untouched.
    @Test func noProcessingKeepsTheCheckpointWeights() throws {
        let checkpoint = try Checkpoint.open(Fixtures.model("tiny-ln").path)
        let gpt = try GPT2Model(checkpoint: checkpoint, processing: .none)
        let p = gpt.parameters
        #expect(p.tensor("h.0.attn.c_attn.weight") == (try checkpoint.tensor("h.0.attn.c_attn.weight")))
        #expect(p.tensor("h.1.ln_2.weight") == (try checkpoint.tensor("h.1.ln_2.weight")))
        #expect(p.wU == p.wE, "the tied unembedding is wte itself")
        #expect(p.table.entry("unembed.weight") == nil && !gpt.lnFolded)
        #expect(p.checkpointTensors().keys.sorted() == checkpoint.tensorNames.sorted())
    }
}

/// Each processing switch turned off alone, against TransformerLens loaded the same way
/// (Tests/Fixtures/reference/processing/).
@Suite struct ProcessingVariantTests {
    static let variants: [(String, ProcessingOptions)] = [
        ("no_fold_ln", ProcessingOptions(foldLN: false)),
        ("no_center_writing_weights", ProcessingOptions(centerWritingWeights: false)),
        ("no_center_unembed", ProcessingOptions(centerUnembed: false)),
        ("no_fold_value_biases", ProcessingOptions(foldValueBiases: false)),
    ]

    @Test(arguments: ["tiny-ln", "tiny-lnfree"], [0, 1, 2, 3])
    func singleSwitchMatchesTransformerLens(model: String, variant: Int) throws {
        let (name, options) = Self.variants[variant]
        struct Spec: Decodable { let tokens: [[Int]] }
        let spec = try JSONDecoder().decode(Spec.self, from: Data(contentsOf: Fixtures.reference("processing/variants.json")))
        let ref = try SafetensorsFile(url: Fixtures.reference("processing/\(model).safetensors"))
        let gpt = try GPT2Model(checkpoint: try Checkpoint.open(Fixtures.model(model).path), processing: options)
        let hooks = ["ln_final.hook_normalized", "blocks.1.hook_resid_post", "blocks.0.attn.hook_v",
                     "blocks.0.ln1.hook_normalized"].map { HookName(parsing: $0)! }
        let out = try gpt.forward(spec.tokens, cache: Set(hooks), logits: .last)
        for hook in hooks {
            let expected = try ref.tensor("\(name).\(hook)")
            let diff = try #require(out.cache[hook]).maxAbsDifference(expected), tol = tolerance(for: expected)
            print("\(model) \(name) \(hook): max |diff| \(diff) (tol \(tol))")
            #expect(diff <= tol, "\(model) \(name) \(hook): \(diff)")
        }
        let logits = try ref.tensor("\(name).logits_last")
        let diff = out.logits.reshaped(logits.shape).maxAbsDifference(logits)
        print("\(model) \(name) logits_last: max |diff| \(diff)")
        #expect(diff <= 1e-4)
    }
}

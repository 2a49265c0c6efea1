import Foundation
import GPT2
import TensorCore
import Testing

/// Interventions (zero, replace, add, scale; chosen positions and heads) against TransformerLens
/// `run_with_hooks`, recorded under Tests/Fixtures/reference/interventions/.
@Suite struct InterventionTests {
    struct Case: Decodable {
        let name: String
        let hook: String
        let op: String
        let head: Int?
        let positions: Positions
        let valueKey: String?
        let factor: Float?
        enum CodingKeys: String, CodingKey { case name, hook, op, head, positions, factor, valueKey = "value_key" }
    }
    /// `"all"` (any text) or a list of positions.
    enum Positions: Decodable {
        case all, list([Int])
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let l = try? c.decode([Int].self) { self = .list(l) } else { self = .all }
        }
        var value: [Int]? { if case .list(let l) = self { return l } else { return nil } }
    }
    struct Cases: Decodable { let tokens: [[Int]]; let cases: [Case] }

    static func cases() throws -> Cases {
        try JSONDecoder().decode(Cases.self, from: Data(contentsOf: Fixtures.reference("interventions/cases.json")))
    }

    static let caseNames = ["zero_z_head", "patch_resid_pre_pos", "add_mlp_out", "scale_pattern_head",
                            "replace_ln_final_scale", "zero_result_head", "patch_q_head"]

    @Test(arguments: ["tiny-ln", "tiny-lnfree"], caseNames)
    func interventionMatchesTransformerLens(model: String, caseName: String) throws {
        let spec = try Self.cases()
        let c = try #require(spec.cases.first { $0.name == caseName })
        let ref = try SafetensorsFile(url: Fixtures.reference("interventions/\(model).safetensors"))
        let gpt = try GPT2Model(checkpoint: try Checkpoint.open(Fixtures.model(model).path))
        let hook = try #require(HookName(parsing: c.hook))
        let operation: Intervention.Operation
        switch c.op {
        case "zero": operation = .zero
        case "scale": operation = .scale(try #require(c.factor))
        case "replace": operation = .replace(try ref.tensor(try #require(c.valueKey)))
        case "add": operation = .add(try ref.tensor(try #require(c.valueKey)))
        default: Issue.record("unknown op \(c.op)"); return
        }
        let iv = Intervention(hook, positions: c.positions.value, heads: c.head.map { [$0] }, operation)
        let final = HookName(.residPost, layer: gpt.config.nLayers - 1)
        let out = try gpt.forward(spec.tokens, cache: [final], interventions: [iv], logits: .all)

        let (B, T, V) = (spec.tokens.count, spec.tokens[0].count, gpt.config.dVocab)
        var last = [Float](), head = [Float]()
        for b in 0..<B {
            last += out.logits.data[(b * T + T - 1) * V ..< (b * T + T) * V]
            for t in 0..<T { head += out.logits.data[(b * T + t) * V ..< (b * T + t) * V + 512] }
        }
        let dLast = Tensor(shape: [B, V], data: last).maxAbsDifference(try ref.tensor("\(caseName).logits_last"))
        let dHead = Tensor(shape: [B, T, 512], data: head).maxAbsDifference(try ref.tensor("\(caseName).logits_head"))
        let dResid = try #require(out.cache[final]).maxAbsDifference(try ref.tensor("\(caseName).resid_final"))
        print("\(model) \(caseName): max |diff| logits_last \(dLast), logits_head \(dHead), resid_final \(dResid)")
        #expect(dLast <= 1e-4 && dHead <= 1e-4 && dResid <= 1e-4)

        // The intervention must have changed something (else the test could not fail).
        let clean = try gpt.forward(spec.tokens, cache: [final], logits: .all)
        #expect(try #require(clean.cache[final]).maxAbsDifference(try #require(out.cache[final])) > 1e-4
                || clean.logits.maxAbsDifference(out.logits) > 1e-4)
    }

    @Test func badInterventionsAreClearErrors() throws {
        let gpt = try GPT2Model(checkpoint: try Checkpoint.open(Fixtures.model("tiny-ln").path))
        let tokens = [[464, 3797, 3332]]
        let resid = HookName(.residPre, layer: 0)
        #expect(throws: GPT2Error.interventionShape(hook: resid.description, expected: [1, 3, 32], got: [2, 2])) {
            try gpt.forward(tokens, interventions: [Intervention(resid, .replace(Tensor(zeros: [2, 2])))])
        }
        #expect(throws: GPT2Error.positionOutOfRange(hook: resid.description, position: 3, length: 3)) {
            try gpt.forward(tokens, interventions: [Intervention(resid, positions: [3], .zero)])
        }
        #expect(throws: GPT2Error.headsOnNonHeadHook(hook: resid.description)) {
            try gpt.forward(tokens, interventions: [Intervention(resid, heads: [0], .zero)])
        }
        let z = HookName(.z, layer: 1)
        #expect(throws: GPT2Error.headOutOfRange(hook: z.description, head: 4, nHeads: 4)) {
            try gpt.forward(tokens, interventions: [Intervention(z, heads: [4], .zero)])
        }
        #expect(throws: GPT2Error.layerOutOfRange("blocks.7.attn.hook_z", nLayers: 2)) {
            try gpt.forward(tokens, interventions: [Intervention(HookName(.z, layer: 7), .zero)])
        }
    }
}

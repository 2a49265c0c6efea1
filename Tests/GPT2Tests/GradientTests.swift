import Foundation
import GPT2
import TensorCore
import Testing

/// Gradients against the reference (Tests/Fixtures/reference/gradients, scripts/reference
/// `--gradients`): TransformerLens backward hooks at every hook, and transformers autograd for every
/// parameter. A tensor passes within 1e-4 · max(1, max |reference|); each test prints the largest
/// differences, absolute and relative to the tensor's own scale.
@Suite struct GradientTests {
    struct Manifest: Decodable {
        struct Intervention: Decodable {
            let hook: String, kind: String
            let positions: PositionList?, heads: [Int]?, factor: Float?
            enum CodingKeys: String, CodingKey { case hook, kind, positions, heads, factor }
        }
        /// `[2]` or `"all"`.
        enum PositionList: Decodable {
            case list([Int]), all
            init(from decoder: Decoder) throws {
                let c = try decoder.singleValueContainer()
                self = (try? c.decode([Int].self)).map(PositionList.list) ?? .all
            }
            var indices: [Int]? { if case .list(let l) = self { return l } else { return nil } }
        }
        struct Case: Decodable {
            let caseName: String, model: String, mode: String, file: String, metric: String
            let tokens: [[Int]], answerIDs: [Int]?, wrongIDs: [Int]?
            let freezeLNScale: Bool, interventions: [Intervention], metricValues: [Double]
            let hooksWithoutTLGradient: [String]
            enum CodingKeys: String, CodingKey {
                case caseName = "case", model, mode, file, metric, tokens, interventions
                case answerIDs = "answer_ids", wrongIDs = "wrong_ids", freezeLNScale = "freeze_ln_scale"
                case metricValues = "metric_values", hooksWithoutTLGradient = "hooks_without_tl_gradient"
            }
        }
        struct ParamCase: Decodable {
            let model: String, metric: String, file: String, tokens: [[Int]], answerIDs: [Int]?, wrongIDs: [Int]?
            let metricValues: [Double]
            enum CodingKeys: String, CodingKey {
                case model, metric, file, tokens, answerIDs = "answer_ids", wrongIDs = "wrong_ids", metricValues = "metric_values"
            }
        }
        let cases: [Case]
        let paramCases: [ParamCase]
        enum CodingKeys: String, CodingKey { case cases, paramCases = "param_cases" }
    }

    static let manifest: Manifest = try! JSONDecoder().decode(
        Manifest.self, from: Data(contentsOf: Fixtures.reference("gradients/manifest.json")))

    static func metric(_ name: String, answer: [Int]?, wrong: [Int]?) -> Metric {
        switch name {
        case "logit_diff": .logitDifference(answer: answer!, wrong: wrong!)
        case "logit": .logit(answer: answer!)
        default: .loss
        }
    }

    /// The worst (absolute, relative-to-scale) difference, and whether it passes 1e-4 · max(1, scale).
    static func compare(_ got: Tensor, _ want: Tensor) -> (diff: Float, scale: Float, ok: Bool) {
        let diff = got.maxAbsDifference(want), scale = finiteMaxAbs(want)
        return (diff, scale, diff <= 1e-4 * max(1, scale))
    }

    @Test(arguments: Array(0..<14))
    func hookGradientsMatchTransformerLens(index: Int) throws {
        let c = Self.manifest.cases[index]
        let model = try GPT2Model(checkpoint: Checkpoint.open(Fixtures.model(c.model).path),
                                  processing: c.mode == "processed" ? .all : .none)
        let ref = try SafetensorsFile(url: Fixtures.reference("gradients/\(c.file)"))
        let B = c.tokens.count, T = c.tokens[0].count, C = model.config.dModel
        var interventions: [Intervention] = []
        for iv in c.interventions {
            let hook = try #require(HookName(parsing: iv.hook))
            switch iv.kind {
            case "replace":
                // value [B, d_model] at the listed positions of a full [B, T, d_model] tensor.
                let value = try ref.tensor("intervention.resid_pre_value")
                var full = Tensor(zeros: [B, T, C])
                for b in 0..<B { for p in iv.positions?.indices ?? [] { for d in 0..<C { full.data[(b * T + p) * C + d] = value.data[b * C + d] } } }
                interventions.append(Intervention(hook, positions: iv.positions?.indices, heads: iv.heads, .replace(full)))
            case "scale": interventions.append(Intervention(hook, positions: iv.positions?.indices, heads: iv.heads, .scale(iv.factor!)))
            default: interventions.append(Intervention(hook, positions: iv.positions?.indices, heads: iv.heads, .zero))
            }
        }
        var backward = BackwardOptions(hookGradients: Set(HookName.all(nLayers: model.config.nLayers)))
        backward.freezeLNScale = c.freezeLNScale
        let (_, result) = try model.gradients(c.tokens, metric: Self.metric(c.metric, answer: c.answerIDs, wrong: c.wrongIDs),
                                              forward: ForwardOptions(interventions: interventions), backward: backward)
        let label = "\(c.model) \(c.mode) \(c.caseName)"
        for (got, want) in zip(result.metric, c.metricValues) { #expect(abs(got - want) <= 1e-4, "\(label) metric \(got) vs \(want)") }
        var worst: (Float, String) = (0, "")
        for hook in HookName.all(nLayers: model.config.nLayers) {
            let name = hook.description
            // With frozen scales TransformerLens reports no gradient at hook_scale; the gradient that
            // reaches the frozen value is the reference there.
            let key = c.hooksWithoutTLGradient.contains(name) ? "leaf_grad.\(name)" : "\(name)_grad"
            let want = try ref.tensor(key)
            let got = try #require(result.hookGradients[hook], "\(label): no gradient at \(name)")
            #expect(got.shape == want.shape, "\(label) \(name) shape \(got.shape) vs \(want.shape)")
            let (diff, scale, ok) = Self.compare(got, want)
            #expect(ok, "\(label) \(name): max |diff| \(diff), scale \(scale)")
            let relative = diff / max(scale, 1e-30)
            if relative > worst.0 { worst = (relative, name) }
        }
        print("\(label): \(result.hookGradients.count) hook gradients, worst relative |diff| \(worst.0) at \(worst.1)")
    }

    @Test(arguments: Array(0..<4))
    func parameterGradientsMatchTransformers(index: Int) throws {
        let c = Self.manifest.paramCases[index]
        let checkpoint = try Checkpoint.open(Fixtures.model(c.model).path)
        let model = try GPT2Model(checkpoint: checkpoint, processing: .none)
        let ref = try SafetensorsFile(url: Fixtures.reference("gradients/\(c.file)"))
        let grads = try ModelParameters(table: model.parameters.table)
        let (_, result) = try model.gradients(c.tokens, metric: Self.metric(c.metric, answer: c.answerIDs, wrong: c.wrongIDs),
                                              backward: BackwardOptions(parameterGradients: grads))
        let label = "\(c.model) \(c.metric)"
        for (got, want) in zip(result.metric, c.metricValues) { #expect(abs(got - want) <= 1e-4, "\(label) metric") }
        var compared = 0, worst: (Float, String) = (0, "")
        for (name, got) in grads.checkpointTensors() {
            let stored = checkpoint.storedName(name)
            if name == "wte.weight" {
                // The reference stores selected rows and the sum of |g| over all of them.
                let rows = try ref.tensor(stored + ".rows"), ids = try ref.tensor(stored + ".row_ids").data.map { Int($0) }
                let C = model.config.dModel
                let picked = Tensor(shape: rows.shape, data: ids.flatMap { id in (0..<C).map { got.data[id * C + $0] } })
                let (diff, scale, ok) = Self.compare(picked, rows)
                #expect(ok, "\(label) wte rows: \(diff) (scale \(scale))")
                let absSum = got.data.reduce(0.0) { $0 + Double(abs($1)) }, want = Double(try ref.tensor(stored + ".abs_sum").data[0])
                #expect(abs(absSum - want) <= 1e-4 * want, "\(label) wte Σ|g| \(absSum) vs \(want)")
                print("\(label) wte: rows max |diff| \(diff), Σ|g| \(absSum) vs \(want)")
            } else {
                let want = try ref.tensor(stored)
                let (diff, scale, ok) = Self.compare(got, want)
                #expect(ok, "\(label) \(stored): max |diff| \(diff) (scale \(scale))")
                if diff / max(scale, 1e-30) > worst.0 { worst = (diff / max(scale, 1e-30), stored) }
            }
            compared += 1
        }
        #expect(compared == checkpoint.tensorNames.count)
        print("\(label): \(compared) parameter gradients, worst relative |diff| \(worst.0) at \(worst.1)")
    }

    /// A backward after a forward with a custom intervention cannot differentiate it: one clear error.
    @Test func customInterventionHasNoDerivative() throws {
        let model = try GPT2Model(checkpoint: Checkpoint.open(Fixtures.model("tiny-ln").path))
        let iv = Intervention(.block(0, .mlpOut), .custom { _ in })
        #expect(throws: GPT2Error.customNotDifferentiable(hook: "blocks.0.hook_mlp_out")) {
            _ = try model.gradients([[1, 2, 3]], metric: .logit(answer: [5]), forward: ForwardOptions(interventions: [iv]))
        }
    }

    /// Caching a hook never changes any other number (it used to: caching attn.hook_result took
    /// another arithmetic path).
    @Test func cachingChangesNothing() throws {
        let model = try GPT2Model(checkpoint: Checkpoint.open(Fixtures.model("tiny-ln").path))
        let tokens = [[464, 3797, 3332, 319, 262, 2603, 290]]
        let plain = try model.forward(tokens, cache: [.block(1, .residPost)])
        let all = try model.forward(tokens, cache: Set(HookName.all(nLayers: 2)))
        #expect(plain.logits == all.logits)
        #expect(plain.cache[.block(1, .residPost)] == all.cache[.block(1, .residPost)])
    }
}

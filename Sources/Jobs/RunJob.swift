import Foundation
import GPT2
import TensorCore

/// `lnlens run`: one prompt through a model: its next-token candidates, the hooks it caches and,
/// with a metric, the metric's value, the gradients at those hooks and (optionally) at every
/// parameter; and the safetensors files they are written to.
public struct RunJob {
    public var model: GPT2Model
    public var tokens: [Int]
    /// Hooks to cache (`--cache`) and whose gradients to take (`--grad-cache`).
    public var hooks: Set<HookName>
    /// Keep the hooks' activations (and every position's logits) for a cache file.
    public var cacheActivations = false
    /// Differentiate this metric, named as `--metric` gives it.
    public var metric: (name: String, metric: Metric)?
    public var freezeLNScale = false
    /// Take d metric / d parameter too (checkpoint weights: the model without processing).
    public var parameterGradients = false

    public init(model: GPT2Model, tokens: [Int], hooks: Set<HookName>) {
        self.model = model
        self.tokens = tokens
        self.hooks = hooks
    }

    /// A next-token candidate.
    public struct Candidate: Encodable, Sendable {
        public let id: Int
        public let token: String
        public let logit: Float
        public let prob: Float
    }

    /// The metric as `--json` prints it.
    public struct MetricValue: Encodable, Sendable {
        public let name: String
        public let value: Double
    }

    public struct Result {
        /// [1, positions, d_vocab]: the last position's, or every position's with `cacheActivations`.
        public var logits: Tensor
        public var cached: [HookName: Tensor]
        public var metric: MetricValue?
        /// d metric / d hook output, by hook.
        public var hookGradients: [HookName: Tensor]
        public var parameterGradients: ModelParameters?

        /// The `k` most likely next tokens (ties by id), with probabilities from the last position's logits.
        public func top(_ k: Int, tokenString: (Int) -> String) -> [Candidate] {
            let V = logits.shape.last!
            let last = Array(logits.data[(logits.count - V)...])
            let probs = softmax(last)
            let order = (0..<V).sorted { last[$0] > last[$1] || (last[$0] == last[$1] && $0 < $1) }
            return order.prefix(k).map { Candidate(id: $0, token: tokenString($0), logit: last[$0], prob: probs[$0]) }
        }

        /// The hook gradients under TransformerLens's `incl_bwd` names (`<hook>_grad`).
        public var namedHookGradients: [String: Tensor] {
            Dictionary(uniqueKeysWithValues: hookGradients.map { ("\($0.key)_grad", $0.value) })
        }

        /// What `--cache` holds: the cached hooks, `logits`, and the hook gradients.
        public var cacheTensors: [String: Tensor] {
            var tensors = Dictionary(uniqueKeysWithValues: cached.map { ($0.key.description, $0.value) })
            tensors["logits"] = logits
            tensors.merge(namedHookGradients) { a, _ in a }
            return tensors
        }
    }

    /// Runs the forward pass (and with `metric` the backward pass).
    public func run() throws -> Result {
        let forward = ForwardOptions(cache: cacheActivations ? hooks : [], logits: cacheActivations ? .all : .last)
        guard let (name, metric) = metric else {
            let pass = try model.run([tokens], forward)
            return Result(logits: pass.logitsTensor(V: model.config.dVocab), cached: pass.cache, metric: nil, hookGradients: [:],
                          parameterGradients: nil)
        }
        var backward = BackwardOptions(hookGradients: hooks)
        backward.freezeLNScale = freezeLNScale
        let parameters = parameterGradients ? try ModelParameters(table: model.parameters.table) : nil
        backward.parameterGradients = parameters
        let (pass, result) = try model.gradients([tokens], metric: metric, forward: forward, backward: backward)
        return Result(logits: pass.logitsTensor(V: model.config.dVocab), cached: pass.cache,
                      metric: MetricValue(name: name, value: result.total), hookGradients: result.hookGradients,
                      parameterGradients: parameters)
    }
}

/// Probabilities from logits, computed in Double for accuracy.
func softmax(_ logits: [Float]) -> [Float] {
    let m = logits.max() ?? 0
    let e = logits.map { exp(Double($0 - m)) }
    let s = e.reduce(0, +)
    return e.map { Float($0 / s) }
}

import Analysis
import Foundation
import GPT2
import ResultsStore
import Support

private typealias N = StoreName.Neurons

/// The options of a `neurons` run.
public struct NeuronOptions: ShardOptions {
    public struct Computation: Codable, Equatable, Sendable {
        @Stored public var context: Int?
        /// The windows read (the first ones of the input).
        @Stored public var windows: Int?
        @Stored public var tokenDtype: String?
        @Stored public var field: String?
        /// Windows per forward pass (moves values in the last float digits).
        @Stored public var batch: Int?
        /// The neurons ablated, comma-separated, in ranking order.
        @Stored public var neurons: String?
        /// Where they come from: `--neurons` (`given`) or the top of a model's ranking (its name).
        @Stored public var selectedFrom: String?
        @Stored public var nullDims: Int?
        public init() {}
        enum CodingKeys: String, CodingKey {
            case context, windows, tokenDtype = "token_dtype", field, batch, neurons, selectedFrom = "selected_from"
            case nullDims = "null_dims"
        }
    }

    public struct Record: Codable, Equatable, Sendable, ShardRecord {
        /// Every model of the invocation, comma-separated.
        @Stored public var models: String?
        @Stored public var db: String?
        @Stored public var text: String?
        @Stored public var tokens: String?
        @Stored public var dataset: String?
        @Stored public var shard: String?
        @Stored public var processing: [String: Bool]?
        public init() {}
    }

    public var computation = Computation()
    public var record = Record()
    public init() {}

    /// `neurons` as a list.
    public var neuronList: [Int] { (computation.neurons ?? "").split(separator: ",").compactMap { Int($0) } }
}

/// `lnlens neurons`: entropy neurons of one model over the first `windows` windows of an input,
/// stored as one run. Its units are ablations: unit i < K, neuron `neurons[i]` mean-ablated alone;
/// unit K + k (k = 0 … K), the first k ablated together (k = 0: nothing, the model as it is; this
/// unit also holds the weights' rows: every neuron's `w_out` measures and W_U's SVD). Each unit
/// is a `run_prompts` row saying what it ablates. Every unit
/// needs the mean activations over all windows, so every run (and every shard) first makes the
/// one pass over them (`NeuronAblation`); `--shard I/N` then takes the units ≡ I (mod N) — the
/// cumulative ablations shard too, each k being one ablation of its own — and `MergeJob`
/// combines them. docs/analyses.md lists the rows and summaries.
public struct NeuronJob {
    public var model: GPT2Model
    public var modelPath: String
    public var modelHash: String
    public var input: AnalysisInput
    public var options: NeuronOptions
    public var toolVersion: String
    public var shard: Shard?
    public var forceResume = false
    /// This model's `EntropyNeurons.weights` at the run's null dims when the caller has them
    /// already (the model that ranked the neurons): not computed again.
    public var weights: EntropyNeurons.Weights?

    public init(model: GPT2Model, modelPath: String, modelHash: String, input: AnalysisInput, options: NeuronOptions, toolVersion: String) {
        (self.model, self.modelPath, self.modelHash, self.input) = (model, modelPath, modelHash, input)
        (self.options, self.toolVersion) = (options, toolVersion)
    }

    var neurons: [Int] { options.neuronList }
    var units: Int { 2 * neurons.count + 1 }
    /// The windows read: the first `windows` of the input.
    public var windows: Int { min(input.count, options.computation.windows ?? input.count) }

    var selected: [Int] {
        let all = Array(0..<units)
        return shard.map { $0.select(all) } ?? all
    }

    /// Stores the run (or continues `resume`) and returns its id once it is complete.
    /// `progress(done, total)` counts ablations after each stored one.
    @discardableResult
    public func run(db: ResultsDatabase, resume: Int64? = nil, progress: (Int, Int) throws -> Void = { _, _ in }) throws -> Int64 {
        let units = selected, M = model.config.dMLP
        if let bad = neurons.first(where: { $0 < 0 || $0 >= M }) { throw AnalysisError.neuronOutOfRange(neuron: bad, dMLP: M) }
        if let shard, units.isEmpty {
            throw ShardError.invalid(source: "--shard", value: shard.description,
                                     reason: "--top \(neurons.count) makes only \(self.units) ablations: use at most \(self.units) shards")
        }
        let (id, done, completed) = try RunLifecycle.beginOrResume(db: db, run: RunRecord(
            command: StoreName.neuronsCommand, optionsJSON: options.json, modelPath: modelPath, modelHash: modelHash,
            lnMode: model.lnMode.rawValue, processingJSON: model.processing.json, promptSetPath: input.path,
            promptSetHash: input.hash, nPrompts: self.units, toolVersion: toolVersion,
            shard: shard.map { ($0.index, $0.count) }), options: NeuronOptions.self, resume: resume, forceResume: forceResume)
        if completed { return id }
        try RunLifecycle.execute(db: db, runID: id, total: units.count, unit: "ablations", resume: "--resume \(id)",
                                 doneCount: { units.filter(((try? db.completedPromptIndices(runID: id)) ?? done).contains).count }, {
            var finished = units.filter(done.contains).count
            try progress(finished, units.count)
            let todo = units.filter { !done.contains($0) }
            guard !todo.isEmpty else { return }
            let ablation = try NeuronAblation(model: model, windows: (0..<windows).map { input.unit($0).tokens },
                                              batch: options.computation.batch ?? 8, ablations: todo.map(ablated).filter { !$0.isEmpty })
            for u in todo {
                let rows = try rows(unit: u, ablation: ablation)
                try db.writeBatch(runID: id, prompts: [prompt(unit: u, tokens: ablation.base.loss.count)],
                                  values: rows.filter { $0.value.isFinite }, ranges: [u...u])
                finished += 1
                try progress(finished, units.count)
            }
        }, finish: { (Self.summaries(from: try db.results(runID: id)), []) })
        return id
    }

    /// The neurons unit `u` ablates.
    func ablated(unit u: Int) -> [Int] {
        let K = neurons.count
        return u < K ? [neurons[u]] : Array(neurons.prefix(u - K))
    }

    /// The rows of unit `u`.
    func rows(unit u: Int, ablation: NeuronAblation) throws -> [ResultRow] {
        let K = neurons.count, layer = model.config.nLayers - 1, set = ablated(unit: u), base = ablation.base
        let stats = set.isEmpty ? base : ablation.ablated[set]!
        let loss = NeuronAblation.TokenStats.moments(stats.loss), entropy = NeuronAblation.TokenStats.moments(stats.entropy)
        let site = u < K ? N.neuronSite : N.cumulativeSite
        var values: [(String, Double)] = [(N.loss, loss.mean), (N.lossSD, loss.sd),
                                          (N.entropy, entropy.mean), (N.entropySD, entropy.sd)]
        if u < K {
            let n = neurons[u]
            let lossEffect = zip(base.loss, stats.loss).map { abs($0 - $1) }.sorted()
            let entropyEffect = zip(base.entropy, stats.entropy).map { abs($0 - $1) }.sorted()
            values += [(N.neuron, Double(n)), (N.meanActivation, ablation.meanActivation[n])]
            values += Self.effects(lossEffect, N.lossEffect) + Self.effects(entropyEffect, N.entropyEffect)
        } else {
            values.append((N.k, Double(u - K)))
            if u > K { values.append((N.neuron, Double(neurons[u - K - 1]))) }
        }
        var out = values.map { ResultRow(promptIndex: u, site: site, layer: layer, quantity: $0.0, value: $0.1) }
        if u == K { out += try weightRows(tokens: base.loss.count) }
        return out
    }

    /// Unit `u` as `run_prompts` describes it: what it ablates; `n_tokens` the positions scored.
    func prompt(unit u: Int, tokens: Int) -> PromptRow {
        let K = neurons.count
        let text = u < K ? "ablate neuron \(neurons[u])"
            : u == K ? "nothing ablated (k = 0)" : "ablate neurons \(neurons.prefix(u - K).map(String.init).joined(separator: ",")) (k = \(u - K))"
        return PromptRow(promptIndex: u, prompt: text, answer: "", wrong: nil, nTokens: tokens)
    }

    /// Median, quartiles (numpy's linear interpolation) and mean of sorted per-token effects.
    static func effects(_ sorted: [Double], _ name: String) -> [(String, Double)] {
        [(name + "_median", Metrics.quantile(sorted: sorted, 0.5)), (name + "_q25", Metrics.quantile(sorted: sorted, 0.25)),
         (name + "_q75", Metrics.quantile(sorted: sorted, 0.75)), (name + "_mean", sorted.reduce(0, +) / Double(max(1, sorted.count)))]
    }

    /// Unit K's rows of the weights: per neuron (position = the neuron) of the last layer, and per
    /// singular direction of W_U (position = its index, largest first); and the tokens scored.
    func weightRows(tokens: Int) throws -> [ResultRow] {
        let layer = model.config.nLayers - 1, K = neurons.count
        let w = try weights ?? EntropyNeurons.weights(model: model, nullDims: options.computation.nullDims
                                                      ?? EntropyNeurons.defaultNullDims(dModel: model.config.dModel))
        var rank = [Int](repeating: 0, count: w.norm.count)
        for (i, n) in w.ranking.enumerated() { rank[n] = i + 1 }
        var out: [ResultRow] = []
        for n in w.norm.indices {
            for (q, v) in [(N.norm, w.norm[n]), (N.logitVar, w.logitVar[n]), (N.ratio, w.ratio[n]),
                           (N.nullFraction, w.nullFraction[n]), (N.rank, Double(rank[n]))] {
                out.append(ResultRow(promptIndex: K, site: N.wOutSite, layer: layer, position: n, quantity: q, value: v))
            }
        }
        let top = w.cosines(of: w.ranking[0])
        for (j, (s, c)) in zip(w.singularValues, top).enumerated() {
            out.append(ResultRow(promptIndex: K, site: N.svdSite, position: j, quantity: N.singularValue, value: s))
            out.append(ResultRow(promptIndex: K, site: N.svdSite, position: j, quantity: N.topCosine, value: c))
        }
        out.append(ResultRow(promptIndex: K, site: StoreName.inputSite, quantity: StoreName.tokens, value: Double(tokens)))
        out.append(ResultRow(promptIndex: K, site: StoreName.inputSite, quantity: N.nullDims, value: Double(w.nullDims)))
        return out
    }
}

extension NeuronJob {
    /// The run's summaries from its stored rows (any subset: a shard's, or all of them):
    /// scope `neurons`, key `N<neuron>` per ablated neuron in ranking order; scope `cumulative`,
    /// key `k<k>`; scope `svd`, key `W_U`. docs/analyses.md lists the metrics.
    public static func summaries(from rows: [ResultRow]) -> [SummaryRow] {
        var single: [Int: [String: Double]] = [:], cumulative: [Int: [String: Double]] = [:]
        var weights: [Int: [String: Double]] = [:], svd: [Int: [String: Double]] = [:], input: [String: Double] = [:]
        for r in rows {
            switch r.site {
            case N.neuronSite: single[r.promptIndex, default: [:]][r.quantity] = r.value
            case N.cumulativeSite: cumulative[r.promptIndex, default: [:]][r.quantity] = r.value
            case N.wOutSite: if let n = r.position { weights[n, default: [:]][r.quantity] = r.value }
            case N.svdSite: if let j = r.position { svd[j, default: [:]][r.quantity] = r.value }
            case StoreName.inputSite: input[r.quantity] = r.value
            default: break
            }
        }
        let byK = Dictionary(cumulative.values.compactMap { v in v[N.k].map { (Int($0), v) } }, uniquingKeysWith: { a, _ in a })
        let base = byK[0]
        var out: [SummaryRow] = []
        for (i, u) in single.keys.sorted().enumerated() {
            let v = single[u]!
            guard let n = v[N.neuron].map(Int.init) else { continue }
            var metrics: [(String, Double?)] = [("rank", Double(i + 1)), (N.neuron, Double(n))]
            let w = weights[n] ?? [:]
            metrics += [(N.norm, w[N.norm]), (N.logitVar, w[N.logitVar]), (N.ratio, w[N.ratio]), (N.nullFraction, w[N.nullFraction]),
                        ("ratio_rank", w[N.rank])]
            metrics += [(N.loss, v[N.loss]), (N.entropy, v[N.entropy]),
                        ("delta_loss", base?[N.loss].flatMap { b in v[N.loss].map { $0 - b } }),
                        ("delta_entropy", base?[N.entropy].flatMap { b in v[N.entropy].map { $0 - b } }),
                        (N.meanActivation, v[N.meanActivation])]
            for e in [N.lossEffect, N.entropyEffect] { metrics += ["median", "q25", "q75", "mean"].map { ("\(e)_\($0)", v["\(e)_\($0)"]) } }
            out += metrics.compactMap { m, x in x.map { SummaryRow(scope: N.scopeNeurons, key: "N\(n)", metric: m, value: $0) } }
        }
        for k in byK.keys.sorted() {
            let v = byK[k]!
            var metrics: [(String, Double?)] = [(N.loss, v[N.loss]), (N.lossSD, v[N.lossSD]), (N.entropy, v[N.entropy]),
                                                (N.entropySD, v[N.entropySD]), (N.neuron, v[N.neuron])]
            metrics.append(("loss_change_pct", base?[N.loss].flatMap { b in v[N.loss].map { ($0 - b) / b * 100 } }))
            metrics.append(("entropy_change_pct", base?[N.entropy].flatMap { b in v[N.entropy].map { ($0 - b) / b * 100 } }))
            out += metrics.compactMap { m, x in x.map { SummaryRow(scope: N.scopeCumulative, key: "k\(k)", metric: m, value: $0) } }
        }
        if let top = weights.first(where: { $0.value[N.rank] == 1 }) {
            var metrics: [(String, Double?)] = [("top_neuron", Double(top.key)), ("top_null_fraction", top.value[N.nullFraction]),
                                                ("smallest_singular_value", svd.values.compactMap { $0[N.singularValue] }.min()),
                                                (N.nullDims, input[N.nullDims]), ("tokens", input[StoreName.tokens])]
            metrics.append(("neurons", Double(weights.count)))
            out += metrics.compactMap { m, x in x.map { SummaryRow(scope: N.scopeSVD, key: "W_U", metric: m, value: $0) } }
        }
        return out
    }
}

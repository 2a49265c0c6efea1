import ArgumentParser
import Foundation
import GPT2
import Support
import TensorCore

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Predict the next token of a prompt; save hook activations and gradients to safetensors.",
        discussion: """
            With --metric, runs a backward pass too: --grad-cache writes d metric / d hook output for the \
            --hooks under TransformerLens's incl_bwd names (<hook>_grad), also added to --cache when given; \
            --param-grads (with --no-process) writes d metric / d parameter under the checkpoint's own tensor \
            names, the tied unembedding's gradient added into wte's. Metrics: logit-diff (logit[answer] − \
            logit[wrong] at the last position), logit (logit[answer]), loss (mean next-token cross-entropy over \
            the prompt, as transformers with labels=input_ids). --freeze-ln-scale treats every LayerNorm scale \
            as a constant (the linearisation DLA makes); the gradient at hook_scale is then the gradient \
            reaching that constant. Output files are written atomically, never over one of the model's files, \
            and replace an existing file only with --force.
            """)

    @Argument(help: "Model folder or hub-cache name (default: the embedded gpt2-tiny).")
    var model: String?
    @Option(help: "The prompt text.") var prompt: String
    @Option(help: "How many next-token candidates to show.") var topK = 10
    @Flag(help: "Put <|endoftext|> (id 50256) first.") var prependBos = false
    @Option(help: "Write the requested hooks and the logits (and with --metric their gradients) to this .safetensors file.")
    var cache: String?
    @Option(parsing: .upToNextOption,
            help: "Hooks to cache: TransformerLens names, globs (blocks.*.hook_resid_pre) or 'all'.")
    var hooks: [String] = []
    @Option(help: ArgumentHelp("Differentiate this metric: logit-diff, logit or loss.", valueName: "metric"))
    var metric: String?
    @Option(help: "The answer token (e.g. \" Mary\") of logit-diff and logit.") var answer: String?
    @Option(help: "The wrong token (e.g. \" John\") of logit-diff.") var wrong: String?
    @Option(help: "Write d metric / d hook output of the --hooks to this .safetensors file.") var gradCache: String?
    @Option(help: "Write d metric / d parameter (checkpoint names; needs --no-process) to this .safetensors file.")
    var paramGrads: String?
    @Flag(help: "Treat every LayerNorm scale as a constant in the backward pass.") var freezeLnScale = false
    @Flag(help: "Replace output files that already exist.") var force = false
    @OptionGroup var processing: ProcessingFlags
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard topK >= 1 else { throw ValidationError("--top-k must be at least 1") }
        let outputs = [("--cache", cache), ("--grad-cache", gradCache), ("--param-grads", paramGrads)]
        for (option, path) in outputs {
            if let path, !path.hasSuffix(".safetensors") {
                throw ValidationError("\(option) \(path): the file name must end in .safetensors")
            }
        }
        let given = outputs.compactMap(\.1)
        if Set(given).count != given.count { throw ValidationError("--cache, --grad-cache and --param-grads must be different files") }
        if (cache != nil || gradCache != nil) && hooks.isEmpty {
            throw ValidationError("--cache and --grad-cache need --hooks PATTERN… (for example --hooks all or --hooks 'blocks.*.hook_resid_pre')")
        }
        if cache == nil && gradCache == nil && !hooks.isEmpty {
            throw ValidationError("--hooks needs --cache FILE.safetensors or --grad-cache FILE.safetensors to write them to")
        }
        guard let metric else {
            if gradCache != nil { throw ValidationError("--grad-cache needs --metric logit-diff|logit|loss: the gradient of what?") }
            if paramGrads != nil { throw ValidationError("--param-grads needs --metric logit-diff|logit|loss: the gradient of what?") }
            if answer != nil || wrong != nil { throw ValidationError("--answer and --wrong go with --metric") }
            if freezeLnScale { throw ValidationError("--freeze-ln-scale goes with --metric") }
            return
        }
        switch metric {
        case "logit-diff":
            if answer == nil || wrong == nil { throw ValidationError("--metric logit-diff needs --answer TOKEN and --wrong TOKEN") }
        case "logit":
            if answer == nil { throw ValidationError("--metric logit needs --answer TOKEN") }
            if wrong != nil { throw ValidationError("--wrong goes with --metric logit-diff") }
        case "loss":
            if answer != nil || wrong != nil { throw ValidationError("--metric loss takes no --answer or --wrong (it scores every next token)") }
        default:
            throw ValidationError("--metric \(metric): use logit-diff, logit or loss")
        }
        if paramGrads != nil && !processing.options.isNone {
            throw ValidationError("--param-grads needs --no-process: parameter gradients are in the checkpoint's own (unprocessed) weights")
        }
    }

    struct Candidate: Encodable { let id: Int; let token: String; let logit: Float; let prob: Float }
    struct MetricValue: Encodable { let name: String; let value: Double }
    struct Output: Encodable { let tokens: [Int]; let top: [Candidate]; let metric: MetricValue? }

    /// Refuses an output path that is one of the model's files, or that exists without --force.
    func checkOutput(_ path: String, option: String, model: LoadedModel) throws {
        do {
            try Files.checkOutput(path, option: option, inputs: model.inputFiles, force: force)
        } catch {
            throw CLIError.io(error.description)
        }
    }

    /// The id of a one-token `text` (`--answer`, `--wrong`).
    func singleToken(_ text: String, option: String, loaded: LoadedModel) throws -> Int {
        let ids = try loaded.requireTokenizer().encode(text)
        guard ids.count == 1 else {
            throw CLIError.usage("\(option) \"\(text)\" is \(ids.count) tokens (\(ids)); it must be one token (usually with a leading space)")
        }
        return ids[0]
    }

    func run() throws {
        let loaded = try LoadedModel.load(model, processing: processing.options)
        let gpt = loaded.model
        let tok = try loaded.requireTokenizer()
        let ids = try loaded.tokens(for: prompt, prependBOS: prependBos)
        let wanted = try HookPattern.resolve(hooks, nLayers: gpt.config.nLayers)
        for (option, path) in [("--cache", cache), ("--grad-cache", gradCache), ("--param-grads", paramGrads)] {
            if let path { try checkOutput(path, option: option, model: loaded) }
        }

        let V = gpt.config.dVocab
        var logits: Tensor
        var cached: [HookName: Tensor]
        var metricValue: MetricValue?
        var hookGrads: [HookName: Tensor] = [:]
        var parameterGrads: ModelParameters?
        if let metric {
            let m: Metric = switch metric {
            case "logit-diff": .logitDifference(answer: [try singleToken(answer!, option: "--answer", loaded: loaded)],
                                                wrong: [try singleToken(wrong!, option: "--wrong", loaded: loaded)])
            case "logit": .logit(answer: [try singleToken(answer!, option: "--answer", loaded: loaded)])
            default: .loss
            }
            var backward = BackwardOptions(hookGradients: wanted)
            backward.freezeLNScale = freezeLnScale
            if paramGrads != nil {
                parameterGrads = try ModelParameters(table: gpt.parameters.table)
                backward.parameterGradients = parameterGrads
            }
            let (pass, result) = try gpt.gradients([ids], metric: m,
                                                   forward: ForwardOptions(cache: cache == nil ? [] : wanted, logits: cache == nil ? .last : .all),
                                                   backward: backward)
            logits = pass.logitsTensor(V: V)
            cached = pass.cache
            hookGrads = result.hookGradients
            metricValue = MetricValue(name: metric, value: result.total)
        } else {
            let out = try gpt.forward([ids], cache: wanted, logits: cache == nil ? .last : .all)
            logits = out.logits
            cached = out.cache
        }
        let last = Array(logits.data[(logits.count - V)...])
        let probs = softmax(last)
        let order = (0..<V).sorted { last[$0] > last[$1] || (last[$0] == last[$1] && $0 < $1) }
        let top = order.prefix(topK).map { Candidate(id: $0, token: tok.tokenString($0), logit: last[$0], prob: probs[$0]) }

        var meta = ["model": loaded.checkpoint.directory.path, "ln_mode": gpt.lnMode.rawValue,
                    "processing": gpt.processing.description, "tokens": ids.map(String.init).joined(separator: ","),
                    "lnlens_version": LNLensVersion.string]
        if let metricValue {
            meta["metric"] = metricValue.name
            meta["metric_value"] = "\(metricValue.value)"
            meta["freeze_ln_scale"] = "\(freezeLnScale)"
            if let answer { meta["answer"] = answer }
            if let wrong { meta["wrong"] = wrong }
        }
        let grads = Dictionary(uniqueKeysWithValues: hookGrads.map { ("\($0.key)_grad", $0.value) })
        if let cache {
            var tensors = Dictionary(uniqueKeysWithValues: cached.map { ($0.key.description, $0.value) })
            tensors["logits"] = logits
            tensors.merge(grads) { a, _ in a }
            try SafetensorsWriter.write(tensors, metadata: meta, to: URL(fileURLWithPath: cache))
            printErr("wrote \(tensors.count) tensors (\(cached.count) hooks\(grads.isEmpty ? "" : ", \(grads.count) gradients") + logits) to \(cache)")
        }
        if let gradCache {
            try SafetensorsWriter.write(grads, metadata: meta, to: URL(fileURLWithPath: gradCache))
            printErr("wrote \(grads.count) hook gradients to \(gradCache)")
        }
        if let paramGrads, let parameterGrads {
            let checkpoint = loaded.checkpoint
            var tensors: [String: Tensor] = [:]
            for (name, t) in parameterGrads.checkpointTensors() { tensors[checkpoint.storedName(name)] = t }
            try SafetensorsWriter.write(tensors, metadata: meta, to: URL(fileURLWithPath: paramGrads))
            printErr("wrote \(tensors.count) parameter gradients to \(paramGrads)")
        }
        if json { return try printJSON(Output(tokens: ids, top: top, metric: metricValue)) }
        print("model   \(loaded.checkpoint.directory.path) (\(gpt.lnMode.rawValue))")
        print("tokens  \(ids.count): \(ids.map { JSONText.quoted(tok.tokenString($0)) }.joined(separator: " "))")
        if let metricValue { print("metric  \(metricValue.name) = \(metricValue.value)") }
        print("next token, top \(topK):")
        print("  rank      id  token                    logit      prob")
        for (i, c) in top.enumerated() {
            let shown = JSONText.quoted(c.token).padding(toLength: 20, withPad: " ", startingAt: 0)
            print(String(format: "  %4d  %6d  ", i + 1, c.id) + shown + String(format: "  %9.4f  %8.5f", c.logit, c.prob))
        }
    }
}

/// Probabilities from logits, computed in Double for accuracy.
func softmax(_ logits: [Float]) -> [Float] {
    let m = logits.max() ?? 0
    let e = logits.map { exp(Double($0 - m)) }
    let s = e.reduce(0, +)
    return e.map { Float($0 / s) }
}

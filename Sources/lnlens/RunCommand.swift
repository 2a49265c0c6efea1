import ArgumentParser
import Foundation
import GPT2
import Jobs
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

    struct Output: Encodable { let tokens: [Int]; let top: [RunJob.Candidate]; let metric: RunJob.MetricValue? }

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

    /// `--metric` with its tokens.
    func parsedMetric(_ loaded: LoadedModel) throws -> (name: String, metric: Metric)? {
        guard let metric else { return nil }
        switch metric {
        case "logit-diff":
            return (metric, .logitDifference(answer: [try singleToken(answer!, option: "--answer", loaded: loaded)],
                                             wrong: [try singleToken(wrong!, option: "--wrong", loaded: loaded)]))
        case "logit": return (metric, .logit(answer: [try singleToken(answer!, option: "--answer", loaded: loaded)]))
        default: return (metric, .loss)
        }
    }

    func run() throws {
        let loaded = try LoadedModel.load(model, processing: processing.options)
        let tok = try loaded.requireTokenizer()
        var job = RunJob(model: loaded.model, tokens: try loaded.tokens(for: prompt, prependBOS: prependBos),
                         hooks: try HookPattern.resolve(hooks, nLayers: loaded.model.config.nLayers))
        for (option, path) in [("--cache", cache), ("--grad-cache", gradCache), ("--param-grads", paramGrads)] {
            if let path { try checkOutput(path, option: option, model: loaded) }
        }
        (job.cacheActivations, job.freezeLNScale, job.parameterGradients) = (cache != nil, freezeLnScale, paramGrads != nil)
        job.metric = try parsedMetric(loaded)
        let result = try job.run()
        try write(result, loaded: loaded, tokens: job.tokens)
        let top = result.top(topK, tokenString: tok.tokenString)
        if json { return try printJSON(Output(tokens: job.tokens, top: top, metric: result.metric)) }
        print("model   \(loaded.checkpoint.directory.path) (\(loaded.model.lnMode.rawValue))")
        print("tokens  \(job.tokens.count): \(job.tokens.map { JSONText.quoted(tok.tokenString($0)) }.joined(separator: " "))")
        if let metric = result.metric { print("metric  \(metric.name) = \(metric.value)") }
        print("next token, top \(topK):")
        print("  rank      id  token                    logit      prob")
        for (i, c) in top.enumerated() {
            let shown = JSONText.quoted(c.token).padding(toLength: 20, withPad: " ", startingAt: 0)
            print(String(format: "  %4d  %6d  ", i + 1, c.id) + shown + String(format: "  %9.4f  %8.5f", c.logit, c.prob))
        }
    }

    /// Writes --cache, --grad-cache and --param-grads, each with the run's metadata, saying so on stderr.
    func write(_ result: RunJob.Result, loaded: LoadedModel, tokens: [Int]) throws {
        let gpt = loaded.model
        var meta = ["model": loaded.checkpoint.directory.path, "ln_mode": gpt.lnMode.rawValue,
                    "processing": gpt.processing.description, "tokens": tokens.map(String.init).joined(separator: ","),
                    "lnlens_version": LNLensVersion.string]
        if let metric = result.metric {
            meta["metric"] = metric.name
            meta["metric_value"] = "\(metric.value)"
            meta["freeze_ln_scale"] = "\(freezeLnScale)"
            if let answer { meta["answer"] = answer }
            if let wrong { meta["wrong"] = wrong }
        }
        let grads = result.namedHookGradients
        if let cache {
            let tensors = result.cacheTensors
            try SafetensorsWriter.write(tensors, metadata: meta, to: URL(fileURLWithPath: cache))
            printErr("wrote \(tensors.count) tensors (\(result.cached.count) hooks\(grads.isEmpty ? "" : ", \(grads.count) gradients") + logits) to \(cache)")
        }
        if let gradCache {
            try SafetensorsWriter.write(grads, metadata: meta, to: URL(fileURLWithPath: gradCache))
            printErr("wrote \(grads.count) hook gradients to \(gradCache)")
        }
        if let paramGrads, let parameters = result.parameterGradients {
            var tensors: [String: Tensor] = [:]
            for (name, t) in parameters.checkpointTensors() { tensors[loaded.checkpoint.storedName(name)] = t }
            try SafetensorsWriter.write(tensors, metadata: meta, to: URL(fileURLWithPath: paramGrads))
            printErr("wrote \(tensors.count) parameter gradients to \(paramGrads)")
        }
    }
}

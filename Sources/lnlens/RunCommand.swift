import ArgumentParser
import Foundation
import GPT2
import Support
import TensorCore

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Predict the next token of a prompt; optionally save hook activations to safetensors.")

    @Argument(help: "Model folder or hub-cache name (default: the embedded gpt2-tiny).")
    var model: String?
    @Option(help: "The prompt text.") var prompt: String
    @Option(help: "How many next-token candidates to show.") var topK = 10
    @Flag(help: "Put <|endoftext|> (id 50256) first.") var prependBos = false
    @Option(help: "Write the requested hooks and the logits to this .safetensors file (never one of the model's files).")
    var cache: String?
    @Flag(help: "Replace output files that already exist.") var force = false
    @Option(parsing: .upToNextOption,
            help: "Hooks to cache: TransformerLens names, globs (blocks.*.hook_resid_pre) or 'all'.")
    var hooks: [String] = []
    @OptionGroup var processing: ProcessingFlags
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard topK >= 1 else { throw ValidationError("--top-k must be at least 1") }
        if cache != nil && hooks.isEmpty {
            throw ValidationError("--cache needs --hooks PATTERN… (for example --hooks all or --hooks 'blocks.*.hook_resid_pre')")
        }
        if cache == nil && !hooks.isEmpty { throw ValidationError("--hooks needs --cache FILE.safetensors to write them to") }
        if let cache, !cache.hasSuffix(".safetensors") {
            throw ValidationError("--cache \(cache): the file name must end in .safetensors")
        }
    }

    struct Candidate: Encodable { let id: Int; let token: String; let logit: Float; let prob: Float }
    struct Output: Encodable { let tokens: [Int]; let top: [Candidate] }

    /// Refuses an output path that is one of the model's files, or that exists without --force.
    func checkOutput(_ path: String, option: String, model: LoadedModel) throws {
        do {
            try Files.checkOutput(path, option: option, inputs: model.inputFiles, force: force)
        } catch {
            throw CLIError.io(error.description)
        }
    }

    func run() throws {
        let loaded = try LoadedModel.load(model, processing: processing.options)
        let gpt = loaded.model
        let tok = try loaded.requireTokenizer()
        let ids = try loaded.tokens(for: prompt, prependBOS: prependBos)
        let wanted = try HookPattern.resolve(hooks, nLayers: gpt.config.nLayers)
        let out = try gpt.forward([ids], cache: wanted, logits: cache == nil ? .last : .all)
        let V = gpt.config.dVocab
        let last = Array(out.logits.data[(out.logits.count - V)...])
        let probs = softmax(last)
        let order = (0..<V).sorted { last[$0] > last[$1] || (last[$0] == last[$1] && $0 < $1) }
        let top = order.prefix(topK).map { Candidate(id: $0, token: tok.tokenString($0), logit: last[$0], prob: probs[$0]) }

        if let cache {
            try checkOutput(cache, option: "--cache", model: loaded)
            var tensors = Dictionary(uniqueKeysWithValues: out.cache.map { ($0.key.description, $0.value) })
            tensors["logits"] = out.logits
            let meta = ["model": loaded.checkpoint.directory.path, "ln_mode": gpt.lnMode.rawValue,
                        "processing": gpt.processing.description, "tokens": ids.map(String.init).joined(separator: ","),
                        "lnlens_version": LNLensVersion.string]
            try SafetensorsWriter.write(tensors, metadata: meta, to: URL(fileURLWithPath: cache))
            printErr("wrote \(tensors.count) tensors (\(out.cache.count) hooks + logits) to \(cache)")
        }
        if json { return try printJSON(Output(tokens: ids, top: top)) }
        print("model   \(loaded.checkpoint.directory.path) (\(gpt.lnMode.rawValue))")
        print("tokens  \(ids.count): \(ids.map { quoted(tok.tokenString($0)) }.joined(separator: " "))")
        print("next token, top \(topK):")
        print("  rank      id  token                    logit      prob")
        for (i, c) in top.enumerated() {
            let shown = quoted(c.token).padding(toLength: 20, withPad: " ", startingAt: 0)
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

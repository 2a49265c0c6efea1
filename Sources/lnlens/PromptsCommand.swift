import Analysis
import ArgumentParser
import Foundation
import Support
import Tokenizer

/// `lnlens prompts`: generate prompt sets (JSONL) and check prompt files.
struct PromptsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prompts",
        abstract: "Generate a prompt set (JSONL) or check one.",
        discussion: """
            Generated sets are deterministic: the same --n and --seed give the same bytes on every \
            machine. Each line is {"prompt", "answer", "wrong", "corrupt", ...}; see prompts/README.md.
            """,
        subcommands: [IOI.self, GreaterThan.self, Topic.self, Check.self])

    struct IOI: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Indirect-object identification prompts (Wang et al. 2022), corrupt = the paper set's S2→IO swap.")
        @OptionGroup var options: GenerationOptions
        func run() throws { try options.generate(.ioi) }
    }

    struct GreaterThan: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "greater-than",
            abstract: "Year-span prompts (Hanna et al. 2023): answer a two-digit year above the start year, corrupt = the XX01 baseline.")
        @OptionGroup var options: GenerationOptions
        func run() throws { try options.generate(.greaterThan) }
    }

    struct Topic: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sea or drawing room (the embedded models' task): nine nouns of Moby-Dick or of Austen, then \", and the\"; corrupt = the other world's list.")
        @OptionGroup var options: GenerationOptions
        func run() throws { try options.generate(.topic) }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a prompt file with the tokenizer and print its hash, size and skipped lines.")
        @Argument(help: "The JSONL prompt file.") var file: String
        @Flag(help: "Skip and count invalid lines instead of stopping at the first.") var skipInvalid = false
        @Flag(help: "Prepend <|endoftext|> to every prompt.") var prependBOS = false
        @OptionGroup var tokenizerOptions: TokenizerOptions

        func run() throws {
            let tokenizer = try tokenizerOptions.load()
            let set = try PromptSet.load(
                url: URL(fileURLWithPath: EmbeddedPrompts.resolve(file)), tokenizer: tokenizer, skipInvalid: skipInvalid, prependBOS: prependBOS)
            let lengths = Dictionary(grouping: set.examples, by: \.tokens.count)
                .sorted { $0.key < $1.key }.map { "\($0.key) tokens ×\($0.value.count)" }
            print("\(set.path): \(set.examples.count) valid prompts, \(set.skipped.count) skipped, sha256 \(set.contentHash)")
            print("lengths: \(lengths.joined(separator: ", "))")
            print("with wrong: \(set.examples.filter { $0.wrongID != nil }.count), with corrupt: \(set.examples.filter { $0.corruptTokens != nil }.count)")
            for s in set.skipped { print("skipped \(set.path):\(s.line): \(s.reason)") }
            for unknown in set.unknownKeys { printErr(unknown.warning(path: set.path)) }
        }
    }
}

/// Where the tokenizer comes from.
struct TokenizerOptions: ParsableArguments {
    @Option(help: "Tokenizer folder (vocab.json + merges.txt, or tokenizer.json). Default: models/tokenizer of the lnlens checkout.")
    var tokenizer: String?

    func load() throws -> GPT2Tokenizer {
        let directory = try tokenizer.map { URL(fileURLWithPath: $0) } ?? defaultTokenizerDirectory()
        return try GPT2Tokenizer.load(directory: directory)
    }
}

struct GenerationOptions: ParsableArguments {
    @Option(name: .customLong("n"), help: "Number of prompts.") var n = 100
    @Option(help: "Seed of the generator (SplitMix64).") var seed: UInt64 = 0
    @Option(help: "Write the JSONL here instead of standard output.") var output: String?
    @Flag(help: "Replace --output if it exists.") var force = false
    @OptionGroup var tokenizerOptions: TokenizerOptions

    /// Far more than any experiment needs; keeps memory and time bounded (1e6 IOI prompts ≈ 250 MB).
    static let maxPrompts = 1_000_000

    func validate() throws {
        guard n > 0 else { throw ValidationError("--n \(n): give a positive number of prompts") }
        guard n <= Self.maxPrompts else { throw ValidationError("--n \(n): at most \(Self.maxPrompts) prompts per set") }
        if force && output == nil { throw ValidationError("--force goes with --output FILE") }
    }

    func generate(_ task: PromptTask) throws {
        let records = try task.generate(n: n, seed: seed, tokenizer: tokenizerOptions.load())
        let text = renderJSONL(records)
        guard let output else {
            FileHandle.standardOutput.write(Data(text.utf8))
            return
        }
        do {
            try Files.checkOutput(output, option: "--output", inputs: [], force: force)
            try Files.writeAtomically(Data(text.utf8), to: URL(fileURLWithPath: output))
        } catch {
            throw AnalysisError.outputUnwritable(path: output, reason: error.description)
        }
        print("wrote \(records.count) \(task.rawValue) prompts to \(output) (seed \(seed))")
    }
}

/// The tokenizer folder used when none is given: the embedded models' `models/tokenizer`
/// (found as `EmbeddedModels.directory` finds `models/`). Throws if it holds no tokenizer.
func defaultTokenizerDirectory() throws -> URL {
    let dir = EmbeddedModels.directory.appendingPathComponent("tokenizer")
    let fileManager = FileManager.default
    let hasPair = fileManager.fileExists(atPath: dir.appendingPathComponent("vocab.json").path)
        && fileManager.fileExists(atPath: dir.appendingPathComponent("merges.txt").path)
    guard hasPair || fileManager.fileExists(atPath: dir.appendingPathComponent("tokenizer.json").path) else {
        throw AnalysisError.tokenizerFolderNotFound(searched: [dir.path])
    }
    return dir
}

import ArgumentParser
import Foundation
import Support
import Training

/// The data options `train`, `remove-ln` and `eval` share besides their text option (`--corpus`,
/// `--text`): a token file or a JSON Lines dataset.
struct TokenDataFlags: ParsableArguments {
    @Option(help: ArgumentHelp("Token ids instead of a text: nanoGPT's .bin (a flat little-endian array, no header, as its prepare.py writes) or a 1-D .npy; one stream with <|endoftext|> between documents, cut into blocks across documents as nanoGPT does.",
                               valueName: "file.bin|file.npy"))
    var tokens: String?
    @Option(help: ArgumentHelp("The ids' type in a headerless --tokens file: u16 (nanoGPT's, the default) or u32; an .npy's header gives its own.",
                               valueName: "u16|u32"))
    var tokenDtype: String?
    @Option(help: ArgumentHelp("JSON Lines, one document per row: each document and <|endoftext|> cut into windows from its start that never cross documents (tails shorter than a window dropped).",
                               valueName: "file.jsonl"))
    var dataset: String?
    @Option(help: ArgumentHelp("With --dataset: the rows' key holding the document, a string (tokenized) or an array of token ids (default: text).",
                               valueName: "key"))
    var field: String?

    func validate() throws {
        if tokens != nil && dataset != nil { throw ValidationError("give one of --tokens FILE or --dataset FILE.jsonl") }
        if let tokenDtype {
            guard tokens != nil else { throw ValidationError("--token-dtype goes with --tokens") }
            guard let t = TokenDType(rawValue: tokenDtype), TokenDType.binTypes.contains(t) else {
                throw ValidationError("--token-dtype \(tokenDtype): use u16 (nanoGPT's .bin) or u32")
            }
        }
        if field != nil && dataset == nil { throw ValidationError("--field goes with --dataset") }
        if let field, field.isEmpty { throw ValidationError("--field: give the rows' key, e.g. text") }
    }

    /// The one input given: `text` (the command's text option, `textOption` its name, already
    /// resolved to a path) or --tokens or --dataset; an error when none or several are.
    func source(text: String?, textOption: String) throws -> CorpusSource {
        let given = [text.map { _ in textOption }, tokens.map { _ in "--tokens" }, dataset.map { _ in "--dataset" }].compactMap { $0 }
        guard given.count == 1 else {
            throw ValidationError(given.isEmpty ? "give the data: \(textOption) FILE.txt, --tokens FILE.bin|.npy or --dataset FILE.jsonl"
                                                : "give one of \(given.joined(separator: ", ")), not several")
        }
        if let tokens { return .tokens(URL(fileURLWithPath: tokens), dtype: tokenDtype.flatMap(TokenDType.init(rawValue:))) }
        if let dataset { return .dataset(URL(fileURLWithPath: dataset), field: fieldName) }
        return .text(URL(fileURLWithPath: text!))
    }

    /// The data of a command whose `--text` is `text` (nil: `heldout`, unless --tokens or --dataset
    /// is given).
    func source(textOrHeldout text: String?) throws -> CorpusSource {
        let textGiven = text ?? (tokens == nil && dataset == nil ? "heldout" : nil)
        return try source(text: textGiven.map(CorpusFiles.resolve), textOption: "--text")
    }

    /// `--field`, or `text`.
    var fieldName: String { field ?? "text" }

    /// A summary line of a dataset's cut (nil for a stream).
    static func describe(_ corpus: TokenCorpus) -> String? { corpus.cut.map { "\(corpus.path): \($0.summary)" } }
}

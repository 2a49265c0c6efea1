import ArgumentParser
import Foundation
import Support

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Show the token ids and token strings of a text.",
        usage: "lnlens tokenize [MODEL] TEXT [--prepend-bos] [--json]")

    @Argument(help: "[MODEL] TEXT — the model folder or name is optional (default: the embedded gpt2-tiny).")
    var words: [String] = []
    @Flag(help: "Put <|endoftext|> (id 50256) first, as TransformerLens's prepend_bos does.")
    var prependBos = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard (1...2).contains(words.count) else {
            throw ValidationError("give the text to tokenize (and optionally a model first): lnlens tokenize [MODEL] TEXT")
        }
    }

    struct Output: Encodable { let tokens: [Int]; let strings: [String] }

    func run() throws {
        let loaded = try LoadedModel.load(words.count == 2 ? words[0] : nil, processing: .none)
        let tok = try loaded.requireTokenizer()
        let ids = try loaded.tokens(for: words.last!, prependBOS: prependBos)
        let strings = ids.map { tok.tokenString($0) }
        if json { return try printJSON(Output(tokens: ids, strings: strings)) }
        print("\(ids.count) tokens")
        for (i, (id, s)) in zip(ids, strings).enumerated() {
            print(String(format: "%4d  %6d  ", i, id) + JSONText.quoted(s))
        }
    }
}


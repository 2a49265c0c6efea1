import Foundation
import Support

/// Everything that can go wrong loading a tokenizer. Each message is one line naming the file
/// (and line) and saying what to do.
public enum TokenizerError: LocalizedError, Equatable {
    /// The folder has neither vocab.json + merges.txt nor tokenizer.json; `found` lists what it has of them.
    case noTokenizerFiles(directory: String, found: [String])
    case fileNotFound(path: String)
    case unreadableFile(path: String, reason: String)
    case invalidVocab(path: String, reason: String)
    /// A merges.txt line (1-based, counting the `#version` header) or a tokenizer.json
    /// `model.merges` entry (0-based index) that is not two tokens.
    case invalidMerge(path: String, location: String, text: String)
    case mergeTokenNotInVocab(path: String, location: String, token: String)
    case invalidTokenizerJSON(path: String, reason: String)
    case missingByteToken(path: String, byte: UInt8)
    case missingEndOfText(path: String)
    case noMerges(path: String)
    case duplicateID(path: String, id: Int, first: String, second: String)

    public var errorDescription: String? {
        switch self {
        case let .noTokenizerFiles(directory, found):
            let have = found.isEmpty ? "none of them" : "only " + found.joined(separator: ", ")
            return "No tokenizer in \(directory): expected vocab.json + merges.txt or tokenizer.json, "
                + "found \(have); copy the missing files from the model's Hugging Face folder."
        case let .fileNotFound(path):
            return "Tokenizer file \(path) does not exist; check the path or copy it from the model's Hugging Face folder."
        case let .unreadableFile(path, reason):
            return "Cannot read tokenizer file \(path) (\(reason)); check that it is a readable UTF-8 text file."
        case let .invalidVocab(path, reason):
            return "\(path) is not a valid vocab.json (\(reason)); expected one JSON object mapping token strings to integer ids."
        case let .invalidMerge(path, location, text):
            return "\(path) \(location): expected two tokens separated by one space, found \(text.debugDescription); "
                + "fix the line or re-download merges.txt."
        case let .mergeTokenNotInVocab(path, location, token):
            return "\(path) \(location): merge token \(token.debugDescription) is not in the vocabulary; "
                + "vocab and merges must come from the same model."
        case let .invalidTokenizerJSON(path, reason):
            return "\(path) is not a usable tokenizer.json (\(reason)); expected a byte-level BPE model with model.vocab and model.merges."
        case let .missingByteToken(path, byte):
            let symbol = String(ByteLevel.characterForByte[Int(byte)])
            return "\(path) has no token for byte 0x\(String(byte, radix: 16, uppercase: true)) "
                + "(written \(symbol.debugDescription)); this is not a GPT-2 byte-level BPE vocabulary."
        case let .noMerges(path):
            return "\(path) holds no merge rules; GPT-2's merges.txt has 50000: copy the model's original file."
        case let .duplicateID(path, id, first, second):
            return "\(path) gives id \(id) to two tokens, \(first.debugDescription) and \(second.debugDescription); "
                + "every token needs its own id: copy the model's original vocabulary."
        case let .missingEndOfText(path):
            return "\(path) has no <|endoftext|> token; use the GPT-2 family model's original tokenizer files."
        }
    }
}

/// One line, no matter how the underlying error describes itself.
func oneLine(_ text: String) -> String { text.oneLine }

/// Short description of a JSON decoding failure: where and what.
func describe(_ error: Error) -> String {
    guard let decoding = error as? DecodingError else { return oneLine(error.localizedDescription) }
    func path(_ context: DecodingError.Context) -> String {
        let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
        return keys.isEmpty ? "" : "at " + keys.joined(separator: ".") + ": "
    }
    switch decoding {
    case let .typeMismatch(_, context), let .valueNotFound(_, context), let .dataCorrupted(context):
        var text = path(context) + context.debugDescription
        if let underlying = context.underlyingError { text += " " + underlying.localizedDescription }
        return oneLine(text)
    case let .keyNotFound(key, context):
        return oneLine(path(context) + "missing key \"\(key.stringValue)\"")
    @unknown default:
        return oneLine(String(describing: decoding))
    }
}

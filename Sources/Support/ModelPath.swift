import Foundation

/// How a stored model path is named for people: its folder's name (`models/gpt2-tiny` →
/// `gpt2-tiny`), or, inside a Hugging Face hub cache
/// (`…/models--openai-community--gpt2/snapshots/<rev>`), the hub name (`openai-community/gpt2`).
/// An `eval` run's path lists several models (`a | b`): each is named.
public enum ModelPath {
    public static func shortName(_ path: String) -> String {
        if path.contains(" | ") { return path.components(separatedBy: " | ").map(shortName).joined(separator: " | ") }
        let parts = path.split(separator: "/").map(String.init)
        if let i = parts.lastIndex(where: { $0.hasPrefix("models--") }) {
            return parts[i].dropFirst("models--".count).replacingOccurrences(of: "--", with: "/")
        }
        return parts.last ?? path
    }
}

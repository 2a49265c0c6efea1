import Foundation
import ResultsStore
import Support

/// Prompts of a patch run whose position k plays the same part in every one of them, so that a
/// mean over them per position means something: a layer × position map is drawn per template,
/// never over prompts whose position k holds different tokens.
struct PromptTemplate: Equatable {
    /// Prompt indices, ascending.
    let prompts: [Int]
    /// One column label per position: the token when every prompt has it there, `[answer]` or
    /// `[wrong]` where every prompt has its own answer or wrong token, else one of the tokens
    /// and `|…` (a slot such as a place or an object); each followed by `_k`.
    let labels: [String]
    /// Per position, the distinct tokens there with their counts, most frequent first (tooltips).
    let variants: [[(token: String, count: Int)]]

    var length: Int { labels.count }

    static func == (a: PromptTemplate, b: PromptTemplate) -> Bool {
        a.prompts == b.prompts && a.labels == b.labels
    }
}

enum PromptTemplates {
    /// Groups prompts into templates, largest first (ties: the one whose first prompt comes first).
    ///
    /// Two prompts share a template when they have the same number of tokens, their answer
    /// token and their wrong token at the same positions (so the IOI orders ABBA and BABA are two
    /// templates: position 3 is the subject in one and the indirect object in the other), and the
    /// same token at more than half of the other positions (a template's fixed words outnumber its
    /// slots: names, places, objects). Each prompt joins the first template, in prompt order,
    /// whose first prompt it matches. Prompts stored without tokens are grouped by length, their
    /// columns labelled `pos k`.
    static func group(_ prompts: [PromptRow]) -> [PromptTemplate] {
        enum Role: Hashable { case answer, wrong, token(String) }
        struct Member { let index: Int; let length: Int; let tokens: [String]?; let roles: [Role] }
        struct Group { var first: Member; var members: [Member] }
        var groups: [Group] = []
        for p in prompts.sorted(by: { $0.promptIndex < $1.promptIndex }) {
            let roles: [Role] = (p.tokens ?? []).map { t in
                t == p.answer ? .answer : (p.wrong != nil && t == p.wrong ? .wrong : .token(t))
            }
            let member = Member(index: p.promptIndex, length: p.tokens?.count ?? p.nTokens, tokens: p.tokens, roles: roles)
            let home = groups.firstIndex { g in
                let first = g.first
                guard first.length == member.length, (first.tokens == nil) == (p.tokens == nil) else { return false }
                guard p.tokens != nil else { return true }
                var fixed = 0, same = 0
                for (a, b) in zip(first.roles, roles) {
                    switch (a, b) {
                    case (.answer, .answer), (.wrong, .wrong): continue
                    case (.token(let x), .token(let y)):
                        fixed += 1
                        if x == y { same += 1 }
                    default: return false
                    }
                }
                return 2 * same > fixed || fixed == 0
            }
            if let home { groups[home].members.append(member) } else { groups.append(Group(first: member, members: [member])) }
        }
        let templates = groups.map { g -> PromptTemplate in
            let length = g.first.length
            var labels: [String] = [], variants: [[(token: String, count: Int)]] = []
            for k in 0..<length {
                guard g.first.tokens != nil else {
                    labels.append("pos \(k)")
                    variants.append([])
                    continue
                }
                var counts: [String: Int] = [:], order: [String] = []
                for m in g.members {
                    let t = m.tokens![k]
                    if counts[t] == nil { order.append(t) }
                    counts[t, default: 0] += 1
                }
                let sorted = order.enumerated().sorted { (counts[$0.element]!, -$0.offset) > (counts[$1.element]!, -$1.offset) }
                    .map { (token: $0.element, count: counts[$0.element]!) }
                variants.append(sorted)
                let label: String
                switch g.first.roles[k] {
                case .answer: label = "[answer]"
                case .wrong: label = "[wrong]"
                case .token(let t): label = sorted.count == 1 ? visible(t) : visible(sorted[0].token) + "|…"
                }
                labels.append("\(shortened(label))_\(k)")
            }
            return PromptTemplate(prompts: g.members.map(\.index), labels: labels, variants: variants)
        }
        return templates.enumerated().sorted { ($0.element.prompts.count, -$0.offset) > ($1.element.prompts.count, -$1.offset) }
            .map(\.element)
    }

    /// A token as a label: spaces kept, line breaks, tabs and other control characters shown
    /// escaped (`\n`, `\t`).
    static func visible(_ token: String) -> String { JSONText.escaped(token) }

    static func shortened(_ label: String) -> String {
        label.count > 16 ? String(label.prefix(15)) + "…" : label
    }

    /// `' store' ×3, ' park' ×2, … (7 tokens)` for a column's tooltip.
    static func describe(_ variants: [(token: String, count: Int)]) -> String {
        guard variants.count > 1 else { return variants.first.map { "'\(visible($0.token))' in every prompt" } ?? "" }
        let shown = variants.prefix(6).map { "'\(visible($0.token))' ×\($0.count)" }.joined(separator: ", ")
        return shown + (variants.count > 6 ? ", … (\(variants.count) tokens)" : "")
    }
}

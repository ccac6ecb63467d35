import ArgumentParser

/// `offloadfs mont m --backing x` should say that `mont` is not a subcommand, and that
/// `mount` probably is what was meant. The argument parser instead takes `mont` for a
/// stray argument of the root command and complains about the first option it does not
/// know ("Unknown option '--backing'"), which names neither.
enum SubcommandSuggestion {
    /// Every name a subcommand answers to (its name and aliases), in help order.
    static func names(of command: ParsableCommand.Type) -> [String] {
        command.configuration.subcommands.flatMap { sub -> [String] in
            let configuration = sub.configuration
            return [configuration.commandName].compactMap { $0 } + configuration.aliases
        }
    }

    /// The message for `arguments` (after the program name) when the first one is meant
    /// as a subcommand but names none; nil when the parser should handle them.
    static func unknownSubcommandMessage(_ arguments: [String], command: ParsableCommand.Type) -> String? {
        guard let first = arguments.first, !first.hasPrefix("-"), first != "help" else { return nil }
        let known = names(of: command)
        guard !known.contains(first) else { return nil }
        let primary = command.configuration.subcommands.compactMap { $0.configuration.commandName }
        let list = "subcommands: \(primary.joined(separator: ", "))"
        if let suggestion = closest(to: first, among: known) {
            return "unknown subcommand '\(first)'; did you mean '\(suggestion)'? (\(list))"
        }
        return "unknown subcommand '\(first)' (\(list); see offloadfs --help)"
    }

    /// The name within two edits (insertions, deletions, substitutions or swaps of two
    /// neighbours) of `typed`, the nearest first; ties go to the earlier name.
    static func closest(to typed: String, among names: [String]) -> String? {
        let scored = names.map { (name: $0, distance: editDistance(typed, $0)) }
        guard let best = scored.min(by: { $0.distance < $1.distance }), best.distance <= 2 else { return nil }
        return best.name
    }

    /// Optimal string alignment distance (Damerau-Levenshtein without repeated edits of
    /// one substring): "unmuont" is one swap from "unmount".
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
        var table = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { table[i][0] = i }
        for j in 0...b.count { table[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    table[i][j] = min(table[i][j], table[i - 2][j - 2] + 1)
                }
            }
        }
        return table[a.count][b.count]
    }
}

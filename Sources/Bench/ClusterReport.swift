import Foundation

/// What one `rqat train` run under mpirun reported.
package struct ClusterRun: Codable, Equatable {
    package struct Teacher: Codable, Equatable {
        package var rank: Int
        package var tokens: Int
        package var busySeconds: Double
        package var wallSeconds: Double

        /// Tokens per second while computing.
        package var busyRate: Double { Double(tokens) / max(busySeconds, 1e-9) }
        package var wallRate: Double { Double(tokens) / max(wallSeconds, 1e-9) }
    }

    package var teacherCount: Int
    package var repeatIndex = 0
    package var teachers: [Teacher] = []
    /// Student 0: its wait for the teacher, its training seconds, the signal it received.
    package var waitSeconds = 0.0, studentSeconds = 0.0, signalMB = 0.0
    /// Student 0's gradient allreduce (data-parallel students only).
    package var allreduceMB: Double?, allreduceWait: Double?
    /// Per step of metrics.jsonl: seconds (tokens / rate) and tokens.
    package var stepSeconds: [Double] = []
    package var stepTokens: [Int] = []
    /// The training loop's seconds at its last step.
    package var loopSeconds = 0.0
    /// The whole mpirun.
    package var wallSeconds = 0.0

    package init(teacherCount: Int) { self.teacherCount = teacherCount }

    /// Aggregate teacher tokens/s over the students' training loop: the run's throughput.
    package var aggregateRate: Double { Double(teachers.reduce(0) { $0 + $1.tokens }) / max(loopSeconds, 1e-9) }
    package var meanBusyRate: Double { teachers.map(\.busyRate).reduce(0, +) / Double(max(teachers.count, 1)) }
}

/// The runs side by side: every run's records (the --json lines, in the order printed), and per
/// teacher count the fastest run (the least disturbed on a shared machine), which the table
/// and the scaling against the first count use.
package struct ClusterReport: Codable {
    package struct Run: Codable {
        package var teachers: [ClusterTeacherRecord]
        package var run: ClusterRunRecord
    }

    package struct Column: Codable {
        package var teachers: Int
        /// Runs of this count; their lowest and highest aggregate tokens/s.
        package var runs: Int
        package var slowestTokensPerS: Double, fastestTokensPerS: Double
        package var fastest: Run
    }

    package var setup: ClusterBench.Setup
    package var runs: [Run] = []
    package var columns: [Column] = []
    package var scaling: [ClusterScalingRecord] = []

    package init(setup: ClusterBench.Setup, options o: ClusterBench.Options, runs results: [ClusterRun]) {
        self.setup = setup
        let common = ClusterCommon(
            students: o.students, signal: o.signal, steps: o.steps, seqLen: o.seqLen, batchTokens: o.batchTokens,
            gradAccum: o.gradAccum, lookahead: o.lookahead, threads: o.threads, cores: setup.cores,
            teacher: setup.teacherLabel, student: setup.studentLabel, teacherParameters: setup.teacherParameters,
            studentParameters: setup.studentParameters, qat: o.qat)
        func records(_ r: ClusterRun) -> Run {
            let t = r.teacherCount
            let stepsDone = Double(r.stepSeconds.count)
            let later = r.stepSeconds.count > 1 ? Array(r.stepSeconds.dropFirst()) : r.stepSeconds
            let signalBytes = r.signalMB * 1e6
            let reduceWait = r.allreduceWait ?? 0
            let teachers = r.teachers.map { teacher in
                Flattened(common, ClusterTeacher(
                    teachers: t, repeat: r.repeatIndex, rank: teacher.rank, tokens: teacher.tokens, busyS: teacher.busySeconds,
                    wallS: teacher.wallSeconds, tokensPerS: teacher.busyRate, tokensPerSWall: teacher.wallRate,
                    busyFraction: teacher.busySeconds / max(teacher.wallSeconds, 1e-9)))
            }
            var fields = ClusterRunFields(
                teachers: t, repeat: r.repeatIndex, ranks: t + o.students, tokensPerS: r.aggregateRate,
                teacherTokens: r.teachers.reduce(0) { $0 + $1.tokens }, teacherTokensPerSBusyPerRank: r.meanBusyRate,
                teacherTokensPerSWallPerRank: r.teachers.map(\.wallRate).reduce(0, +) / Double(t),
                stepS: r.loopSeconds / stepsDone, stepSMedian: later.sorted()[later.count / 2], firstStepS: r.stepSeconds[0],
                trainS: r.loopSeconds, wallS: r.wallSeconds, studentWaitS: r.waitSeconds,
                studentWaitFraction: r.waitSeconds / max(r.loopSeconds, 1e-9), studentWaitSPerStep: r.waitSeconds / stepsDone,
                studentComputeSPerStep: max(0, (r.loopSeconds - r.waitSeconds - reduceWait) / stepsDone),
                signalMB: r.signalMB, signalBytesPerStep: signalBytes / stepsDone,
                trainedTokensPerStep: Double(setup.trainedTokens) / Double(o.steps))
            if setup.trainedTokens > 0 && signalBytes > 0 { fields.signalBytesPerTrainedToken = signalBytes / Double(setup.trainedTokens) }
            if let mb = r.allreduceMB {
                fields.allreduceMBPerRank = mb
                fields.allreduceBytesPerStep = mb * 1e6 / stepsDone
                fields.allreduceWaitS = reduceWait
                fields.allreduceWaitSPerStep = reduceWait / stepsDone
            }
            return Run(teachers: teachers, run: Flattened(common, fields))
        }

        var best: [Int: ClusterRun] = [:]
        for t in o.teacherCounts {
            let ofCount = results.filter { $0.teacherCount == t }
            guard !ofCount.isEmpty else { continue }
            runs += ofCount.map(records)
            let ordered = ofCount.sorted { $0.aggregateRate < $1.aggregateRate }
            best[t] = ordered.last!
            columns.append(Column(teachers: t, runs: ofCount.count, slowestTokensPerS: ordered.first!.aggregateRate,
                                  fastestTokensPerS: ordered.last!.aggregateRate, fastest: records(ordered.last!)))
        }
        if let t0 = o.teacherCounts.first, let base = best[t0] {
            for t in o.teacherCounts.dropFirst() {
                guard let r = best[t] else { continue }
                scaling.append(Flattened(common, ClusterScaling(
                    teachers: t, baselineTeachers: t0, ranks: t + o.students, repeats: o.repeats,
                    tokensPerS: r.aggregateRate, baselineTokensPerS: base.aggregateRate,
                    speedup: r.aggregateRate / base.aggregateRate, idealSpeedup: Double(t) / Double(t0),
                    busyRatePerRankRatio: r.meanBusyRate / base.meanBusyRate, coresLimitSpeedup: t + o.students > setup.cores)))
            }
        }
    }
}

/// The parameters every cluster record carries.
package struct ClusterCommon: Codable, Equatable {
    package var students: Int
    package var signal: String
    package var steps: Int, seqLen: Int, batchTokens: Int, gradAccum: Int, lookahead: Int
    package var threads: Int, cores: Int
    package var teacher: String, student: String
    package var teacherParameters: Int, studentParameters: Int
    package var qat: String

    enum CodingKeys: String, CodingKey {
        case students, signal, steps, lookahead, threads, cores, teacher, student, qat
        case seqLen = "seq_len", batchTokens = "batch_tokens", gradAccum = "grad_accum"
        case teacherParameters = "teacher_parameters", studentParameters = "student_parameters"
    }
}

package typealias ClusterTeacherRecord = Flattened<ClusterCommon, ClusterTeacher>
package typealias ClusterRunRecord = Flattened<ClusterCommon, ClusterRunFields>
package typealias ClusterScalingRecord = Flattened<ClusterCommon, ClusterScaling>

/// One teacher rank of one run.
package struct ClusterTeacher: BenchRecord, Equatable {
    package static let name = "cluster_teacher"
    package var teachers: Int, `repeat`: Int, rank: Int, tokens: Int
    package var busyS: Double, wallS: Double
    /// Tokens per second while busy, and over the rank's wall time.
    package var tokensPerS: Double, tokensPerSWall: Double
    package var busyFraction: Double

    enum CodingKeys: String, CodingKey {
        case teachers, `repeat`, rank, tokens
        case busyS = "busy_s", wallS = "wall_s"
        case tokensPerS = "tokens_per_s", tokensPerSWall = "tokens_per_s_wall"
        case busyFraction = "busy_fraction"
    }
}

/// One run.
package struct ClusterRunFields: BenchRecord, Equatable {
    package static let name = "cluster"
    package var teachers: Int, `repeat`: Int, ranks: Int
    /// Teacher tokens served over the students' training-loop seconds.
    package var tokensPerS: Double
    package var teacherTokens: Int
    package var teacherTokensPerSBusyPerRank: Double, teacherTokensPerSWallPerRank: Double
    package var stepS: Double, stepSMedian: Double, firstStepS: Double
    package var trainS: Double, wallS: Double
    package var studentWaitS: Double, studentWaitFraction: Double, studentWaitSPerStep: Double
    /// Loop seconds less the wait for the teacher and for the allreduce, per step.
    package var studentComputeSPerStep: Double
    package var signalMB: Double, signalBytesPerStep: Double
    package var trainedTokensPerStep: Double
    package var signalBytesPerTrainedToken: Double?
    /// Data-parallel students only.
    package var allreduceMBPerRank: Double?, allreduceBytesPerStep: Double?, allreduceWaitS: Double?, allreduceWaitSPerStep: Double?

    enum CodingKeys: String, CodingKey {
        case teachers, `repeat`, ranks
        case tokensPerS = "tokens_per_s"
        case teacherTokens = "teacher_tokens"
        case teacherTokensPerSBusyPerRank = "teacher_tokens_per_s_busy_per_rank"
        case teacherTokensPerSWallPerRank = "teacher_tokens_per_s_wall_per_rank"
        case stepS = "step_s", stepSMedian = "step_s_median", firstStepS = "first_step_s"
        case trainS = "train_s", wallS = "wall_s"
        case studentWaitS = "student_wait_s", studentWaitFraction = "student_wait_fraction"
        case studentWaitSPerStep = "student_wait_s_per_step", studentComputeSPerStep = "student_compute_s_per_step"
        case signalMB = "signal_mb", signalBytesPerStep = "signal_bytes_per_step"
        case trainedTokensPerStep = "trained_tokens_per_step"
        case signalBytesPerTrainedToken = "signal_bytes_per_trained_token"
        case allreduceMBPerRank = "allreduce_mb_per_rank", allreduceBytesPerStep = "allreduce_bytes_per_step"
        case allreduceWaitS = "allreduce_wait_s", allreduceWaitSPerStep = "allreduce_wait_s_per_step"
    }
}

/// A teacher count against the first one, both by their fastest run.
package struct ClusterScaling: BenchRecord, Equatable {
    package static let name = "cluster_scaling"
    package var teachers: Int, baselineTeachers: Int, ranks: Int, repeats: Int
    package var tokensPerS: Double, baselineTokensPerS: Double
    package var speedup: Double, idealSpeedup: Double
    package var busyRatePerRankRatio: Double
    /// Ranks outnumber cores, so more teacher ranks cannot give the ideal speedup here.
    package var coresLimitSpeedup: Bool

    enum CodingKeys: String, CodingKey {
        case teachers, ranks, repeats, speedup
        case baselineTeachers = "baseline_teachers"
        case tokensPerS = "tokens_per_s", baselineTokensPerS = "baseline_tokens_per_s"
        case idealSpeedup = "ideal_speedup"
        case busyRatePerRankRatio = "busy_rate_per_rank_ratio"
        case coresLimitSpeedup = "cores_limit_speedup"
    }
}

"""Course subscriptions with two constraints that no single stream owns (the DCB specification's example).

A course holds at most ``capacity`` students; a student takes at most :data:`MAX_COURSES` courses. Each
subscription is one decision over the events tagged with its course and its student: of many students
racing for the last seat, or one student racing into several courses, only the decisions that still fit
append; the others decide again on what was recorded meanwhile and raise :class:`CourseFull` or
:class:`TooManyCourses`.

Streams: ``course-{id}`` holds a course's definition, ``student-{id}`` a student's subscriptions.
``subscriptions_handler(store, read_stream=True)`` keeps the same rules another way: the student's limit
from the student's own stream (guarded by its version, as a stream decider would be), the course's
capacity from the query (guarded by the append condition).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from epoch import Codec, Decider, DecisionHandler, EventStore, Query, QueryItem

MAX_COURSES = 3
"""How many courses one student may take."""


# -- commands ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DefineCourse:
    course_id: str
    capacity: int


@dataclass(frozen=True, slots=True)
class SubscribeStudent:
    course_id: str
    student_id: str


CourseCommand = DefineCourse | SubscribeStudent


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CourseDefined:
    course_id: str
    capacity: int


@dataclass(frozen=True, slots=True)
class StudentSubscribed:
    course_id: str
    student_id: str


CourseEvent = CourseDefined | StudentSubscribed


# -- errors ------------------------------------------------------------------------------------
class CourseError(Exception):
    """A command the course context refuses."""


class CourseExists(CourseError):
    def __init__(self, course_id: str) -> None:
        super().__init__(f"course {course_id!r} exists already")
        self.course_id = course_id


class UnknownCourse(CourseError):
    def __init__(self, course_id: str) -> None:
        super().__init__(f"unknown course {course_id!r}")
        self.course_id = course_id


class CourseFull(CourseError):
    def __init__(self, course_id: str, capacity: int) -> None:
        super().__init__(f"course {course_id!r} is full ({capacity} students)")
        self.course_id = course_id
        self.capacity = capacity


class TooManyCourses(CourseError):
    def __init__(self, student_id: str) -> None:
        super().__init__(f"student {student_id!r} already takes {MAX_COURSES} courses")
        self.student_id = student_id


# -- state: what the events read say about their courses and students -------------------------
@dataclass(frozen=True, slots=True)
class Enrolment:
    capacities: dict[str, int] = field(default_factory=dict)  # course -> capacity
    students: dict[str, frozenset[str]] = field(default_factory=dict)  # course -> its students
    courses: dict[str, frozenset[str]] = field(default_factory=dict)  # student -> their courses


def decide(command: CourseCommand, state: Enrolment) -> list[CourseEvent]:
    match command:
        case DefineCourse(course_id=course_id, capacity=capacity):
            if course_id in state.capacities:
                raise CourseExists(course_id)
            if type(capacity) is not int or capacity < 1:
                raise CourseError(f"course {course_id!r}: capacity must be an int >= 1, not {capacity!r}")
            return [CourseDefined(course_id, capacity)]
        case SubscribeStudent(course_id=course_id, student_id=student_id):
            seats = state.capacities.get(course_id)
            if seats is None:
                raise UnknownCourse(course_id)
            taken = state.courses.get(student_id, frozenset())
            if course_id in taken:
                return []  # subscribed already
            if len(state.students.get(course_id, ())) >= seats:
                raise CourseFull(course_id, seats)
            if len(taken) >= MAX_COURSES:
                raise TooManyCourses(student_id)
            return [StudentSubscribed(course_id, student_id)]
    raise TypeError(f"not a course command: {command!r}")


def evolve(state: Enrolment, event: CourseEvent) -> Enrolment:
    match event:
        case CourseDefined(course_id=course_id, capacity=capacity):
            return Enrolment({**state.capacities, course_id: capacity}, state.students, state.courses)
        case StudentSubscribed(course_id=course_id, student_id=student_id):
            students = {**state.students, course_id: state.students.get(course_id, frozenset()) | {student_id}}
            courses = {**state.courses, student_id: state.courses.get(student_id, frozenset()) | {course_id}}
            return Enrolment(state.capacities, students, courses)
    return state


courses: Decider[CourseCommand, Enrolment, CourseEvent] = Decider(decide=decide, evolve=evolve, initial_state=Enrolment)
codec: Codec[CourseEvent] = Codec([CourseDefined, StudentSubscribed])


def tags_of(event: CourseEvent) -> tuple[str, ...]:
    if isinstance(event, StudentSubscribed):
        return (f"course:{event.course_id}", f"student:{event.student_id}")
    return (f"course:{event.course_id}",)


def course_query(command: CourseCommand) -> Query:
    """The course's definition and subscriptions (the capacity rule)."""
    return Query([QueryItem(types=("CourseDefined", "StudentSubscribed"), tags=(f"course:{command.course_id}",))])


def subscription_query(command: CourseCommand) -> Query:
    """Both rules: the course's events, and the student's subscriptions (none for a definition)."""
    if isinstance(command, DefineCourse):
        return course_query(command)
    student = QueryItem(types=("StudentSubscribed",), tags=(f"student:{command.student_id}",))
    return Query([*course_query(command).items, student])


def stream_of(command: CourseCommand) -> str:
    if isinstance(command, DefineCourse):
        return f"course-{command.course_id}"
    return f"student-{command.student_id}"


def subscriptions_handler(
    store: EventStore, *, read_stream: bool = False, retries: int = 20
) -> DecisionHandler[CourseCommand, Enrolment, CourseEvent]:
    """Runs the course commands. ``read_stream=True``: the student's limit comes from ``student-{id}``
    (read, and guarded by its version), so the query holds only the course's events."""
    return DecisionHandler(
        store,
        courses,
        codec,
        query=course_query if read_stream else subscription_query,
        stream=stream_of,
        retries=retries,
        read_stream=read_stream,
        tags=tags_of,
    )

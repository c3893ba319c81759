"""What a job folder says about itself, for people: the self-contained report.html (`html`, with its
chart, its stylesheet and script (`assets`) and the advice per kind of failure) and the words the
final line and `status` share."""

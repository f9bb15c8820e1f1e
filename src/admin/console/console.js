// Placeholder: the console script is written in its own branch (issue 19).
'use strict';
